"""Per-example exposure (ours; the paper's named future work): one α per rollout from a contextual
Beta policy, learned from paired first-order credit.

The ATESD paper's fixed-exposure sweep finds that easy problems prefer α = 1, medium ones 0.5 and
hard ones the lowest, yet its controller picks one global α. Here the state of example i is the
global state s_t (`atesd.exposure.state`, 7 features) followed by the example's own features
(`example_features`: difficulty label, whether the rollout was right, its self-confidence and
length), so the same Beta network
    (a_i, b_i) = 1 + softplus(f_φ([s_t, x_i])),   α_raw_i ~ Beta(a_i, b_i),   α_i = clip(α_raw_i)
can give each rollout its own exposure. Every step is a decision for every example (many
decisions per step instead of one per hold window). For the first `credit_examples` examples the
loop also scores a counterfactual α′_raw_i ~ Beta(a_i, b_i) (`atesd.exposure.credit`), and after
each step one REINFORCE update uses their paired credit:
    A_i = (c_i(α_i) − c_i(α′_i)) / RMS(c − c′),
    L_ctrl = −(1/2K) Σ_i A_i [log π(α_raw_i | s_i) − log π(α′_raw_i | s_i)] + c·max(0, H̄ − H_target)²
The draws of step t come from a private stream seeded by (seed, t), so a resumed run draws the same.

granularity="per_difficulty" (ours) is the same loop with the contextual network replaced by a
table (`BetaTable`): the state of example i is the one-hot of its difficulty level k_i (levels
1 … `difficulty_levels`, higher levels share the last row, an example without a label gets row 0),
so (a_k, b_k) = 1 + softplus(w_k) is one Beta per level, every level starting at
Beta(initial_beta_a, initial_beta_b) (default Beta(2, 2)), and a level's Beta moves only with its
own examples' paired credit. The ATESD paper's fixed-exposure sweep (easy problems prefer α = 1,
hard ones less) is the case it is built for; the toy world's first-order credit has that shape per
level (docs/toy-world.md, section 8.4).

granularity="per_feature" (ours, label-free) is the same table over the bins of a per-example feature
that every run has when it picks α (`atesd.exposure.by_feature.FeatureBins`: whether the rollout was
right, the problem's pass rate over its group, the rollout's confidence, the full-exposure divergence):
row k for bin k, one more row for an example whose feature is unknown. It is the learned form of the
by-feature oracle, as per_difficulty is of the by-difficulty one.
"""

from __future__ import annotations

import copy
import random
from typing import Sequence

import torch

from atesd.exposure.by_feature import FeatureBins
from atesd.exposure.config import ExposureConfig
from atesd.exposure.decision import ExposureChoice, StepClock
from atesd.exposure.beta_policy import BetaPolicyNetwork, BetaTable, clipped, default_target_entropy, policy_step
from atesd.exposure.reward import RunningScale
from atesd.exposure.state import (
    EXAMPLE_FEATURE_NAMES,
    N_FEATURES,
    ExampleContext,
    ExposureStateTracker,
    TrainingSignals,
    example_features,
)


def difficulty_one_hot(context: ExampleContext, levels: int) -> list[float]:
    """The per-difficulty state: a one-hot of length levels + 1, index 0 for an unlabelled example,
    k for level k (levels below 1 count as 1, above `levels` as `levels`)."""
    row = 0 if context.difficulty is None else min(levels, max(1, int(context.difficulty)))
    return [1.0 if k == row else 0.0 for k in range(levels + 1)]


def _means_by(keys: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """The mean of `values` per key, keys sorted."""
    groups: dict[str, list[float]] = {}
    for key, value in zip(keys, values):
        groups.setdefault(key, []).append(value)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


class PerExampleExposure:
    """granularity="per_example", "per_difficulty" or "per_feature": see the module docstring. Rank 0 only,
    like LearnedExposure."""

    kind = "learned"
    needs_probe_nll = True
    needs_grounding_score = False
    needs_credit = True
    probe_every = 4  # the probe NLL is a state feature only

    def __init__(self, cfg: ExposureConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.per_difficulty = cfg.granularity == "per_difficulty"
        self.binner = FeatureBins(cfg) if cfg.granularity == "per_feature" else None
        self.needs_full_divergence = self.binner is not None and cfg.feature == "divergence"
        if self.per_difficulty:
            self.network = BetaTable(cfg.difficulty_levels + 1, cfg.initial_beta_a, cfg.initial_beta_b)
        elif self.binner is not None:
            self.network = BetaTable(self.binner.count + 1, cfg.initial_beta_a, cfg.initial_beta_b)
        else:
            self.network = BetaPolicyNetwork(N_FEATURES + len(EXAMPLE_FEATURE_NAMES), cfg.hidden_size, cfg.seed,
                                             cfg.initial_beta_a, cfg.initial_beta_b)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.policy_lr)
        self.tracker = ExposureStateTracker(total_steps, cfg.ema_decay)
        self.target_entropy = default_target_entropy() if cfg.target_entropy is None else cfg.target_entropy
        self.scale = RunningScale()
        self._clock = StepClock()
        self._step: dict | None = None  # the current step's states and draws
        self.updates = 0

    def wants_credit(self, step: int) -> bool:
        return True

    def decide(self, step: int, contexts: Sequence[ExampleContext]):
        """The step's ratios, one per example (and the counterfactual ones)."""
        if self._clock.begin(step) or self._step is None or self._step["step"] != step:
            bins = None
            if self.per_difficulty:
                states = [difficulty_one_hot(c, self.cfg.difficulty_levels) for c in contexts]
            elif self.binner is not None:
                bins = self.binner.bins(self.binner.feature_values(contexts))
                rows = [self.binner.count if b is None else b for b in bins]
                states = [[1.0 if k == row else 0.0 for k in range(self.binner.count + 1)] for row in rows]
            else:
                shared = self.tracker.features(step)
                states = [shared + example_features(c) for c in contexts]
            with torch.no_grad():
                beta_a, beta_b = self.network(torch.tensor(states, dtype=torch.float32))
            rng = random.Random(f"atesd.exposure.per_example:{self.cfg.seed}:{step}")
            draws = [(rng.betavariate(a, b), rng.betavariate(a, b)) for a, b in zip(beta_a.tolist(), beta_b.tolist())]
            self._step = {"step": step, "states": states, "draws": draws, "contexts": list(contexts),
                          "beta_mean": (beta_a / (beta_a + beta_b)).tolist(), "bins": bins}
        draws = self._step["draws"]
        return ExposureChoice([clipped(self.cfg, raw) for raw, _ in draws], [clipped(self.cfg, cf) for _, cf in draws])

    def observe(self, step: int, signals: TrainingSignals | None, credit=None) -> list[dict]:
        """Fold in step t; with its credit, one policy update. Returns the step's records."""
        self._clock.end(step)
        current = self._step
        ratios = [clipped(self.cfg, raw) for raw, _ in current["draws"]]
        records = [self._decision_record(step, current, ratios)]
        if signals is None:
            return records + [{"event": "dropped", "step": step, "decision_step": step,
                               "reason": f"no training signals at step {step}"}]
        signals.require("top1_disagreement", "self_confidence")
        if credit is None:
            raise ValueError(f"exposure.granularity={self.cfg.granularity} needs the step's paired credit (the loop's "
                             "credit phase)")
        self.tracker.observe(sum(ratios) / len(ratios), signals)
        paired = credit.paired()
        if len(paired) < 1:
            return records
        for value in paired:
            self.scale.update(value)
        advantages = [value / self.scale.rms() for value in paired]
        states = torch.tensor([current["states"][i] for i in credit.indices], dtype=torch.float32)
        raw = torch.tensor([current["draws"][i][0] for i in credit.indices], dtype=torch.float32)
        other = torch.tensor([current["draws"][i][1] for i in credit.indices], dtype=torch.float32)
        metrics = policy_step(self.network, self.optimizer, torch.cat([states, states]), torch.cat([raw, other]),
                              torch.tensor(advantages + [-a for a in advantages], dtype=torch.float32),
                              self.target_entropy, self.cfg.entropy_coef)
        self.updates += 1
        for i, chosen, counterfactual, advantage in zip(credit.indices, credit.chosen, credit.counterfactual,
                                                         advantages):
            records.append({"event": "credit", "step": step, "decision_step": step, "example": i,
                            "difficulty": current["contexts"][i].difficulty,
                            "correct": current["contexts"][i].correct,
                            "raw_reveal_ratio": current["draws"][i][0], "reveal_ratio": ratios[i],
                            "counterfactual_ratio": clipped(self.cfg, current["draws"][i][1]),
                            "progress_return": chosen - counterfactual, "grounding_return": None,
                            "reward": chosen - counterfactual, "chosen_credit": chosen,
                            "counterfactual_credit": counterfactual, "advantage": advantage})
        records.append({"event": "update", "step": step, "update": self.updates, **metrics,
                        "target_entropy": self.target_entropy, "reward_mean": sum(paired) / len(paired),
                        "decision_steps": [step]})
        return records

    def _decision_record(self, step: int, current: dict, ratios: list[float]) -> dict:
        levels = [str(c.difficulty) for c in current["contexts"]]
        record = {"event": "decision", "step": step, "decision_step": step,
                  "reveal_ratio": sum(ratios) / len(ratios), "reveal_ratios": ratios,
                  "raw_reveal_ratio": sum(raw for raw, _ in current["draws"]) / len(ratios),
                  "beta_mean": sum(current["beta_mean"]) / len(ratios),
                  "reveal_ratio_by_difficulty": _means_by(levels, ratios),
                  "beta_mean_by_difficulty": _means_by(levels, current["beta_mean"]),
                  "difficulty": [c.difficulty for c in current["contexts"]],
                  "correct": [c.correct for c in current["contexts"]]}
        if current.get("bins") is not None:  # granularity="per_feature": the same per feature bin
            bins = ["unknown" if b is None else str(b) for b in current["bins"]]
            record.update(feature=self.cfg.feature, bins=current["bins"], reveal_ratio_by_bin=_means_by(bins, ratios),
                          beta_mean_by_bin=_means_by(bins, current["beta_mean"]))
        return record

    def state_dict(self) -> dict:
        return {"kind": self.kind, "granularity": self.cfg.granularity,
                "network": {k: v.detach().clone() for k, v in self.network.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "tracker": copy.deepcopy(self.tracker.state_dict()), "scale": self.scale.state_dict(),
                "clock": self._clock.state_dict(), "updates": self.updates,
                "feature_bins": self.binner.state_dict() if self.binner is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind or state.get("granularity") != self.cfg.granularity:
            raise ValueError("this checkpoint holds another exposure policy: resume with the exposure.policy "
                             "and exposure.granularity the run was started with")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tracker.load_state_dict(state["tracker"])
        self.scale.load_state_dict(state["scale"])
        self._clock.load_state_dict(state["clock"])
        if self.binner is not None:
            self.binner.load_state_dict(state.get("feature_bins", {}))
        self._step = None
        self.updates = int(state["updates"])
