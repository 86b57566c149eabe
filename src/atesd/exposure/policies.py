"""Exposure policies: the one interface, the three baselines, and the one place a policy is chosen.

`ExposurePolicy` is what the training loop talks to. Per student step t (0-based), on rank 0:

    ratio = policy.ratio_for_step(t)        # before step t's rollouts; broadcast to all ranks
    ... rollouts, teacher at ratio, loss, student update ...
    records = policy.observe(t, signals)    # signals measured at step t (None if the step was
                                            # skipped); append records to exposure.jsonl
    policy.state_dict() / load_state_dict() # with the rest of the checkpoint, after observe

The loop calls `decide(t, contexts)` (one `ExampleContext` per rollout of the step's global batch),
which returns an `ExposureChoice`: one α per example (the same for a global policy) and, for the
counterfactual reward, the α′ each example is also scored with. `ratio_for_step(t)` is the
global policies' own method underneath.

Policies (the untrained ones share `atesd.exposure.held`'s mechanics):
    FixedExposure     α = reveal_ratio at every step (OPSD is reveal_ratio = 1).
    ByDifficulty      α = difficulty_ratios[level − 1] per example (an oracle check, ours).
    ByFeature         α per bin of a label-free per-example feature (`atesd.exposure.by_feature`).
    RandomExposure    one untrained draw per hold window of H steps: U[α_min, α_max], or
                      clip(Beta(a, b), α_min, α_max); the draw of window w is seeded by (seed, w).
    ScheduleExposure  α_t = start + (end − start) · t/(T − 1), linear over the T steps.
    LearnedExposure   the ATESD controller (`atesd.exposure.learned`).
    PerExampleExposure  one α per example from a contextual policy, or from its difficulty level's
                      Beta (granularity="per_difficulty"; `atesd.exposure.per_example`).

Departures from the paper:
  1. The paper's baselines are a fixed α and a "uniformly random" α; we draw the random α once per
     hold window (like the controller) and within [α_min, α_max]. The schedule is ours.
"""

from __future__ import annotations

import random
from typing import Protocol, Sequence, runtime_checkable

from atesd.exposure.by_feature import ByFeatureExposure
from atesd.exposure.config import ExposureConfig
from atesd.exposure.decision import ExposureChoice
from atesd.exposure.held import FixedExposure, GlobalDecisions, HeldRatioPolicy
from atesd.exposure.learned import LearnedExposure
from atesd.exposure.per_example import PerExampleExposure
from atesd.exposure.state import ExampleContext, TrainingSignals


@runtime_checkable
class ExposurePolicy(Protocol):
    """Chooses the reveal ratio α for each student step; see the module docstring for the protocol.

    Attributes tell the loop which optional signals to measure every step:
    needs_grounding_score (g_t, teacher log-prob of the withheld reference), needs_probe_nll, and
    needs_full_divergence (each rollout's divergence at α = 1, before deciding: `by_feature` and the per-feature
    controller with feature="divergence").
    """

    kind: str
    needs_grounding_score: bool
    needs_probe_nll: bool
    needs_credit: bool
    needs_full_divergence: bool

    def wants_credit(self, step: int) -> bool:
        """Whether step t's paired credit is to be measured (the loop's credit phase)."""
        ...

    def decide(self, step: int, contexts: Sequence[ExampleContext]) -> ExposureChoice:
        """The ratios of step t's examples; called on rank 0 only, the loop broadcasts them.

        Repeating the call for the same t before observe(t) returns the same choice.
        """
        ...

    def observe(self, step: int, signals: TrainingSignals | None, credit=None) -> list[dict]:
        """Fold in what step t measured; return that step's exposure.jsonl records (plain dicts).

        Call it for every step, with signals=None when the step measured nothing usable (a skipped
        non-finite update): steps must stay consecutive.
        """
        ...

    def state_dict(self) -> dict:
        """A deep copy of all that exact resumption needs; torch.save(weights_only=True)-able."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


class GlobalLearnedExposure(GlobalDecisions, LearnedExposure):
    """The ATESD controller behind the loop's `decide` (one α per hold window for the batch)."""


class RandomExposure(HeldRatioPolicy):
    """An untrained draw per hold window: U[α_min, α_max] or clip(Beta(a, b), α_min, α_max).

    The draw of window w = t // H depends only on (seed, w), so a resumed run draws the same α.
    """

    kind = "random"

    def __init__(self, cfg: ExposureConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def _window(self, step: int) -> int:
        return step // self.cfg.hold_steps

    def _choose(self, step: int, window: int) -> tuple[float, float]:
        rng = random.Random(f"atesd.exposure.random:{self.cfg.seed}:{window}")
        if self.cfg.random_distribution == "uniform":
            sampled = rng.uniform(self.cfg.ratio_min, self.cfg.ratio_max)
        else:
            sampled = rng.betavariate(self.cfg.random_beta_a, self.cfg.random_beta_b)
        return sampled, min(self.cfg.ratio_max, max(self.cfg.ratio_min, sampled))


class ScheduleExposure(HeldRatioPolicy):
    """α_t = start + (end − start) · min(1, t/(T − 1)): start at step 0, end at step T − 1."""

    kind = "schedule"

    def __init__(self, start: float, end: float, total_steps: int) -> None:
        super().__init__()
        self.start = start
        self.end = end
        self.total_steps = total_steps

    def _window(self, step: int) -> int:
        return step

    def _choose(self, step: int, window: int) -> tuple[float, float]:
        fraction = min(1.0, step / max(1, self.total_steps - 1))
        ratio = self.start + (self.end - self.start) * fraction
        return ratio, ratio


class ByDifficultyExposure(FixedExposure):
    """α = difficulty_ratios[level − 1] for an example of that level (the last entry for higher
    levels), reveal_ratio for an example without a level: a fixed per-difficulty assignment."""

    kind = "by_difficulty"

    def __init__(self, cfg: ExposureConfig) -> None:
        super().__init__(cfg.reveal_ratio)
        self.by_level = list(cfg.difficulty_ratios)

    def ratio_of(self, difficulty: int | None) -> float:
        if difficulty is None:
            return self.reveal_ratio
        return self.by_level[min(difficulty, len(self.by_level)) - 1]

    def decide(self, step: int, contexts: Sequence[ExampleContext]) -> ExposureChoice:
        self.ratio_for_step(step)
        return ExposureChoice([self.ratio_of(c.difficulty) for c in contexts])


def make_exposure_policy(cfg: ExposureConfig, total_steps: int) -> ExposurePolicy:
    """Build the policy named by cfg.policy for a run of total_steps student steps (T)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if cfg.policy == "fixed":
        return FixedExposure(cfg.reveal_ratio)
    if cfg.policy == "by_difficulty":
        return ByDifficultyExposure(cfg)
    if cfg.policy == "by_feature":
        return ByFeatureExposure(cfg)
    if cfg.policy == "random":
        return RandomExposure(cfg)
    if cfg.policy == "schedule":
        return ScheduleExposure(cfg.schedule_start, cfg.schedule_end, total_steps)
    if cfg.granularity in ("per_example", "per_difficulty", "per_feature"):
        return PerExampleExposure(cfg, total_steps)
    return GlobalLearnedExposure(cfg, total_steps)
