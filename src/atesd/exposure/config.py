"""Configuration of the exposure policy: how the reveal ratio α is chosen at each student step.

One flat dataclass of plain types (str, float, int, bool, None) so that it can be embedded in the
OmegaConf structured config; `__post_init__` checks every field once, and each error message says
how to fix it. Field comments name the paper symbol (ATESD, arXiv 2605.11458, section "controller").

Departures from the paper:
  1. The paper only describes the learned controller; "fixed", "random" and "schedule" are the
     baselines of its ablations (fixed α, uniformly random α) plus a linear curriculum of ours;
     "by_difficulty" (a fixed α per difficulty level) is the oracle check of per-difficulty exposure,
     "by_feature" the same check over a label-free feature every run has when it picks α.
  2. Every number that is our choice where the paper is silent is a field here (H, L, γ, λ_gt, B, ...).
  3. Defaults that make the controller able to learn within one run (docs/algorithm.md, "The
     controller's defaults"): the progress signal is the held-out probe NLL (α-independent), the
     lookahead equals the hold window (no credit from the next decision's window), G_gt is
     z-scored before λ_gt weighs it, and the policy's Adam rate is 1e-2. The paper's own choices
     are one override each: progress_signal=distill_loss lookahead_steps=8 grounding_scale=none
     policy_lr=1e-3 (configs/toy-atesd-paper.yaml).
  4. Ours, beyond the paper: reward="counterfactual" (paired first-order credit on the held-out
     probe, `atesd.exposure.credit`), granularity="per_example" (one α per example from a
     contextual policy, `atesd.exposure.per_example`) and granularity="per_difficulty" (one learned
     Beta per difficulty level, the same module).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields
from typing import Literal

from atesd.exposure.state import FEATURE_NAMES


@dataclass
class ExposureConfig:
    """How the reveal ratio α (the teacher's exposure to the reference) is chosen each step."""

    # Which policy picks α: "fixed" (constant reveal_ratio), "random" (untrained, one draw per
    # hold window), "schedule" (linear schedule_start → schedule_end), "learned" (ATESD controller).
    # "by_difficulty" (a fixed α per difficulty level), "by_feature" (a fixed α per bin of a
    # label-free per-example feature, below).
    policy: Literal["fixed", "random", "schedule", "by_difficulty", "by_feature", "learned"] = "fixed"
    # α for policy="fixed". 1.0 is OPSD (full reference), 0.0 shows only the final answer.
    reveal_ratio: float = 1.0
    # policy="by_difficulty": α for difficulty 1, 2, … (the last value for higher levels);
    # examples without a difficulty get reveal_ratio.
    difficulty_ratios: list[float] = field(default_factory=lambda: [1.0])
    # policy="by_feature": the per-example feature whose bin sets α (`atesd.exposure.by_feature`):
    # "correct" (the student's rollout reached the reference answer: 0 or 1), "pass_rate" (the
    # fraction of the problem's rollouts so far, this step's group included, that were right),
    # "confidence" (the rollout's mean token log-prob), "divergence" (the mean per-token training
    # divergence of the teacher at α = 1 from the student on the rollout: one more no-grad teacher
    # and student forward per step), "random" (a uniform draw in [0, 1) per rollout, seeded by
    # exposure.seed: the control that bins rollouts by no property of theirs).
    feature: Literal["correct", "pass_rate", "confidence", "divergence", "random"] = "correct"
    # policy="by_feature": "value" bins the feature itself; "batch_quantile" bins its mid-rank
    # fraction within the step's batch, in (0, 1) (e.g. 0.4: the lowest 40 %).
    feature_binning: Literal["value", "batch_quantile"] = "value"
    # policy="by_feature": ascending bin edges; a value v falls in bin i = #{edges ≤ v}.
    feature_thresholds: list[float] = field(default_factory=lambda: [0.5])
    # policy="by_feature": α of each bin, one more than the edges (bin 0 first).
    feature_ratios: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # policy="random": "uniform" draws α ~ U[ratio_min, ratio_max]; "beta" draws α_raw ~ Beta(a, b)
    # and clips it to [ratio_min, ratio_max] (an untrained controller).
    random_distribution: Literal["uniform", "beta"] = "uniform"
    # Beta shape a of policy="random" with random_distribution="beta".
    random_beta_a: float = 2.0
    # Beta shape b of policy="random" with random_distribution="beta".
    random_beta_b: float = 2.0
    # policy="schedule": α at the first step (0-based step 0).
    schedule_start: float = 0.25
    # policy="schedule": α at the last step (step total_steps − 1).
    schedule_end: float = 1.0
    # α_min: lower clip of the sampled ratio (random and learned policies).
    ratio_min: float = 0.05
    # α_max: upper clip of the sampled ratio (random and learned policies).
    ratio_max: float = 1.0
    # H: one sampled α is used for this many consecutive student updates (random, learned).
    hold_steps: int = 4
    # L: lookahead of the discounted learning-progress reward, in student steps. L ≤ H credits a
    # decision with its own window only; the paper's L = 8 > H = 4 also pays it for the next one's.
    lookahead_steps: int = 4
    # γ: discount of the lookahead reward.
    discount: float = 0.9
    # λ_gt: weight of the teacher-grounded return G_gt in R = G_lp + λ_gt·G_gt.
    grounding_weight: float = 0.1
    # How G_lp and G_gt are put on one scale before λ_gt weighs them: "zscore" divides each by
    # its running standard deviation over the decisions so far (the method's "after scaling");
    # "none" adds them in their own units (nats), where G_gt's −1…−2 dwarfs G_lp's ~0.01.
    grounding_scale: Literal["zscore", "none"] = "zscore"
    # Which steps' g_t G_gt averages: "next" g_{t0+1} … g_{t0+L} (the paper's formula) or "own"
    # g_{t0} … g_{t0+L−1} (ours: with L = H every term is measured under the decision's own α).
    grounding_steps: Literal["own", "next"] = "own"
    # "discounted": G_lp over L steps (paper). "one_step": the immediate change ℓ_{t0} − ℓ_{t0+1}
    # and G_gt = g_{t0+1} (the paper's ablation row has grounding_weight=0 as well).
    # "counterfactual" (ours): each decision also draws a counterfactual α′ from the same policy;
    # both are scored on the same θ_t and rollouts by the first-order decrease of the held-out
    # probe NLL their gradients would give, and the paired difference is the reward.
    reward: Literal["discounted", "one_step", "counterfactual"] = "discounted"
    # ℓ_t, the loss whose decrease is rewarded: "probe_nll" (held out, does not depend on α, so
    # the controller cannot earn reward by changing the loss it is scored on) or "distill_loss"
    # (the paper's; its level rises with α).
    progress_signal: Literal["probe_nll", "distill_loss"] = "probe_nll"
    # "global": one α per hold window for the whole batch (paper). "per_example" (ours): a
    # contextual policy draws one α per example from per-example features (difficulty, whether
    # the rollout was right, its confidence and length); "per_difficulty" (ours): one Beta per
    # difficulty level, each example's α drawn from its level's; "per_feature" (ours, label-free):
    # one Beta per bin of `feature` (binned by feature_binning and feature_thresholds as for
    # policy="by_feature"), each example's α drawn from its bin's. All need reward="counterfactual".
    granularity: Literal["global", "per_example", "per_difficulty", "per_feature"] = "global"
    # granularity="per_difficulty": levels 1 … difficulty_levels get a Beta each (higher levels share
    # the last one; examples without a label get one more).
    difficulty_levels: int = 5
    # reward="counterfactual": examples per step (over all processes) whose paired credit is
    # measured (each costs forwards under both ratios), and the step ε of the central difference
    # along the unit probe direction.
    credit_examples: int = 8
    credit_step: float = 1e-2
    # reward="counterfactual": how the directional derivative c_i(α) is computed
    # (`atesd.exposure.credit`): "forward_mode" (exact, one forward-mode pass of the student; any
    # dtype, LoRA) or "central_difference" (two forwards at θ ± ε·û; float32 weights only).
    credit_derivative: Literal["forward_mode", "central_difference"] = "forward_mode"
    # reward="counterfactual": the probe direction (a forward and backward on the probe set) is
    # recomputed every this many steps and reused in between.
    credit_refresh_steps: int = 4
    # B: completed decisions per controller update (REINFORCE batch).
    decisions_per_update: int = 4
    # Adam learning rate of the controller parameters φ (the paper's recipe: 1e-3, our choice there;
    # too slow for the decisions one run gives, see docs/algorithm.md).
    policy_lr: float = 1e-2
    # Beta(a, b) the learned policy starts at (both > 1; the paper: Beta(2, 2), mean 0.5). Ours as an
    # option: a start near full exposure (e.g. a = 6, b = 1.2, mean 0.83) makes a level without
    # usable credit stay near OPSD instead of at α ≈ 0.5.
    initial_beta_a: float = 2.0
    initial_beta_b: float = 2.0
    # The state s the global controller sees (granularity="global"), a subset of
    # `atesd.exposure.state.FEATURE_NAMES` in that order. Default all 7; the paper's 6 leave out
    # top1_disagreement_ema (its one mismatch feature is the mean per-token divergence).
    state_features: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    # Width of the two hidden layers of the controller MLP f_φ.
    hidden_size: int = 64
    # Decay of the exponential moving averages in the state s: ema ← d·ema + (1 − d)·x.
    ema_decay: float = 0.9
    # H_target of the one-sided entropy penalty; None means the entropy of Beta(2, 2).
    target_entropy: float | None = None
    # c: coefficient of the entropy penalty c·max(0, H[π_φ] − H_target)².
    entropy_coef: float = 0.1
    # Problems held out of training for the probe set (the student's NLL of their references is the
    # probe NLL; their NLL gradient is the counterfactual credit's direction) and, as many again,
    # for the grounding set (the teacher's log-prob of their withheld steps is g_t). Measured
    # every step on θ_t; their cost is timing/probe_s.
    probe_size: int = 16
    # Seed of the controller's initial weights and of every random α draw.
    seed: int = 0

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(ExposureConfig)
        for f in fields(self):
            if typing.get_origin(hints[f.name]) is Literal:
                _check_choice(f.name, getattr(self, f.name), typing.get_args(hints[f.name]))
        for name in ("reveal_ratio", "schedule_start", "schedule_end", "ratio_min", "ratio_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(
                    f"exposure.{name} must lie in [0, 1] (it is a fraction of the reference's "
                    f"steps), got {value}"
                )
        if not self.ratio_min < self.ratio_max:
            raise ValueError(
                f"exposure.ratio_min ({self.ratio_min}) must be below exposure.ratio_max "
                f"({self.ratio_max}); for a constant ratio use exposure.policy=fixed"
            )
        for name in ("random_beta_a", "random_beta_b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(
                    f"exposure.{name} must be > 0 (a Beta shape), got {value}; try 2.0"
                )
        for name in ("initial_beta_a", "initial_beta_b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 1.0):
                raise ValueError(f"exposure.{name} must be > 1 (the policy's Beta shapes are 1 + softplus(·)), "
                                 f"got {value}; try 2.0")
        if not self.difficulty_ratios or not all(0.0 <= r <= 1.0 for r in self.difficulty_ratios):
            raise ValueError(f"exposure.difficulty_ratios must be a non-empty list of ratios in [0, 1], "
                             f"got {self.difficulty_ratios}")
        _check_bins(self)
        if (not self.state_features or len(set(self.state_features)) != len(self.state_features)
                or [n for n in FEATURE_NAMES if n in self.state_features] != list(self.state_features)):
            raise ValueError(f"exposure.state_features must be distinct names from {list(FEATURE_NAMES)}, in that "
                             f"order, got {self.state_features}")
        if self.granularity != "global" and list(self.state_features) != list(FEATURE_NAMES):
            raise ValueError(f"exposure.state_features selects the global controller's state; granularity="
                             f"{self.granularity} uses all {len(FEATURE_NAMES)} features: leave it at its default")
        if self.granularity != "global" and self.reward != "counterfactual":
            raise ValueError(f"exposure.granularity={self.granularity} needs exposure.reward=counterfactual: the "
                             "lookahead rewards measure the whole batch's progress and cannot credit one example")
        if not (math.isfinite(self.credit_step) and self.credit_step > 0):
            raise ValueError(f"exposure.credit_step must be > 0, got {self.credit_step}; try 1e-2")
        for name, default in (
            ("hold_steps", 4),
            ("lookahead_steps", 4),
            ("credit_examples", 8),
            ("credit_refresh_steps", 4),
            ("hidden_size", 64),
            ("probe_size", 8),
            ("difficulty_levels", 5),
        ):
            if not _is_int_at_least(getattr(self, name), 1):
                raise ValueError(
                    f"exposure.{name} must be an integer >= 1, got {getattr(self, name)!r}; "
                    f"try {default}"
                )
        if not _is_int_at_least(self.decisions_per_update, 2):
            raise ValueError(
                f"exposure.decisions_per_update must be an integer >= 2, got "
                f"{self.decisions_per_update!r}: advantages are normalised within the batch of B "
                "decisions, so B=1 gives zero advantage and the controller never learns; try 4"
            )
        if not (math.isfinite(self.discount) and 0.0 < self.discount <= 1.0):
            raise ValueError(f"exposure.discount must lie in (0, 1], got {self.discount}; try 0.9")
        if not (math.isfinite(self.grounding_weight) and self.grounding_weight >= 0.0):
            raise ValueError(
                f"exposure.grounding_weight must be >= 0, got {self.grounding_weight}; "
                "0 removes G_gt from the reward, 0.1 is the default"
            )
        if not (math.isfinite(self.policy_lr) and self.policy_lr > 0.0):
            raise ValueError(f"exposure.policy_lr must be > 0, got {self.policy_lr}; try 1e-3")
        if not (math.isfinite(self.ema_decay) and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(
                f"exposure.ema_decay must lie in [0, 1), got {self.ema_decay}; try 0.9"
            )
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ValueError(
                f"exposure.target_entropy must be finite or null, got {self.target_entropy}; "
                "null uses the entropy of Beta(2, 2)"
            )
        if not (math.isfinite(self.entropy_coef) and self.entropy_coef >= 0.0):
            raise ValueError(
                f"exposure.entropy_coef must be >= 0, got {self.entropy_coef}; try 0.1"
            )
        if not _is_int_at_least(self.seed, 0):
            raise ValueError(f"exposure.seed must be an integer >= 0, got {self.seed!r}")


def _check_bins(cfg: ExposureConfig) -> None:
    """policy="by_feature" and granularity="per_feature": ascending finite edges, quantile edges in (0, 1);
    policy="by_feature": one ratio in [0, 1] per bin."""
    edges, ratios = cfg.feature_thresholds, cfg.feature_ratios
    if not all(isinstance(e, (int, float)) and math.isfinite(e) for e in edges) or list(edges) != sorted(edges):
        raise ValueError(f"exposure.feature_thresholds must be ascending finite numbers, got {edges}")
    if cfg.policy == "by_feature" and (len(ratios) != len(edges) + 1 or not all(0.0 <= r <= 1.0 for r in ratios)):
        raise ValueError(f"exposure.feature_ratios needs {len(edges) + 1} ratios in [0, 1] (one per bin of the "
                         f"{len(edges)} feature_thresholds), got {ratios}")
    if cfg.feature_binning == "batch_quantile" and not all(0.0 < e < 1.0 for e in edges):
        raise ValueError(f"exposure.feature_thresholds with feature_binning=batch_quantile are fractions of the "
                         f"batch in (0, 1), got {edges}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"exposure.{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        )


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
