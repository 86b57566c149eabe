"""Fixed exposure per bin of a label-free per-example feature (ours): policy="by_feature".

The oracle check of per-difficulty exposure (`ByDifficultyExposure`) needs a difficulty label that
real training sets do not have. This policy assigns α from what any run knows about an example when
it picks α (the ATESD paper names exposure per example as future work; docs/algorithm.md, section
4), so that a fixed assignment can show which of these signals carries the by-difficulty oracle's
gain:

    correct      1 if the student's own rollout reached the reference answer, else 0
    pass_rate    the fraction of right rollouts among the problem's rollouts so far: those of its
                 earlier visits and of this step's group (`rollout.num_generations` rollouts of the
                 problem, the current one included). With one rollout per prompt and a problem's first
                 visit, it equals `correct`. SEELE (arXiv 2509.06923) fits a per-problem difficulty
                 from such outcomes to choose a hint length per problem.
    confidence   the rollout's mean token log-prob under the student (≤ 0), the per-example form of
                 the paper's batch self-confidence
    divergence   the mean per-token training divergence D(p_T^1 ‖ p_S) of the teacher at full
                 exposure from the student on the rollout (`atesd.full_exposure`)
    random       a uniform draw in [0, 1) per rollout (stream seeded by exposure.seed and the call's
                 count): the control, bins that share nothing with the rollout

Binning: with feature_binning="value" the feature v itself, with "batch_quantile" its mid-rank
fraction q_i = (#{j: v_j < v_i} + ½·#{j: v_j = v_i}) / n within the step's global batch of n
rollouts. With edges e_0 < … < e_{K−1} (feature_thresholds) the bin is i = #{k: e_k ≤ v} and
α = feature_ratios[i]. An example whose feature is unknown (no problem id for pass_rate, no
divergence measured) gets reveal_ratio.
"""

from __future__ import annotations

import bisect
import random
from typing import Sequence

from atesd.exposure.config import ExposureConfig
from atesd.exposure.decision import ExposureChoice
from atesd.exposure.held import FixedExposure
from atesd.exposure.state import ExampleContext, TrainingSignals


def mid_rank_fractions(values: Sequence[float]) -> list[float]:
    """q_i = (#{j: v_j < v_i} + ½·#{j: v_j = v_i}) / n: each value's place in its batch, in (0, 1)."""
    ordered = sorted(values)
    n = len(values)
    return [(bisect.bisect_left(ordered, v) + 0.5 * (bisect.bisect_right(ordered, v) - bisect.bisect_left(ordered, v)))
            / n for v in values]


class FeatureBins:
    """The bin of each example's feature (module docstring); shared by policy="by_feature" and the learned
    granularity="per_feature". Keeps, for feature="pass_rate", each problem's (right, rollouts) counts over
    the run (`state_dict`, so a resumed run bins as the uninterrupted one)."""

    def __init__(self, cfg: ExposureConfig) -> None:
        self.feature, self.binning, self.edges = cfg.feature, cfg.feature_binning, list(cfg.feature_thresholds)
        self.count = len(self.edges) + 1
        self.outcomes: dict[str, list[int]] = {}  # problem id → [right rollouts, rollouts]
        self.seed, self.calls = cfg.seed, 0  # feature="random": the draws' stream and its position

    def feature_values(self, contexts: Sequence[ExampleContext]) -> list[float | None]:
        """Each example's feature (None when unknown); pass_rate folds this step's rollouts into the
        problems' counts, so call it once per step."""
        if self.feature == "correct":
            return [float(c.correct) for c in contexts]
        if self.feature == "confidence":
            return [c.self_confidence for c in contexts]
        if self.feature == "divergence":
            return [c.full_exposure_divergence for c in contexts]
        if self.feature == "random":
            self.calls += 1
            rng = random.Random(f"atesd.exposure.by_feature:{self.seed}:{self.calls}")
            return [rng.random() for _ in contexts]
        for c in contexts:
            if c.problem_id is not None:
                counts = self.outcomes.setdefault(c.problem_id, [0, 0])
                counts[0] += int(c.correct)
                counts[1] += 1
        return [None if c.problem_id is None else self.outcomes[c.problem_id][0] / self.outcomes[c.problem_id][1]
                for c in contexts]

    def bins(self, values: Sequence[float | None]) -> list[int | None]:
        """The bin of each value (None for an unknown one), after the batch-quantile map if asked."""
        known = [i for i, v in enumerate(values) if v is not None]
        placed: list[float | None] = list(values)
        if self.binning == "batch_quantile" and known:
            for i, q in zip(known, mid_rank_fractions([values[i] for i in known])):
                placed[i] = q
        return [None if v is None else bisect.bisect_right(self.edges, v) for v in placed]

    def state_dict(self) -> dict:
        return {"outcomes": {pid: list(c) for pid, c in self.outcomes.items()}, "feature_calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.outcomes = {pid: [int(c[0]), int(c[1])] for pid, c in state.get("outcomes", {}).items()}
        self.calls = int(state.get("feature_calls", 0))


class ByFeatureExposure(FixedExposure):
    """α = feature_ratios[bin of the example's feature]; see the module docstring. Logs one "assignment"
    record per step: the feature's mean over the batch, the share of the batch in each bin and the mean α.
    """

    kind = "by_feature"

    def __init__(self, cfg: ExposureConfig) -> None:
        super().__init__(cfg.reveal_ratio)
        self.feature, self.by_bin = cfg.feature, list(cfg.feature_ratios)
        self.binner = FeatureBins(cfg)
        self.needs_full_divergence = cfg.feature == "divergence"
        self._last: tuple[int, ExposureChoice, list[int | None], float | None] | None = None

    def decide(self, step: int, contexts: Sequence[ExampleContext]) -> ExposureChoice:
        self.ratio_for_step(step)
        if self._last is not None and self._last[0] == step:
            return self._last[1]  # a repeated call for the same step counts no outcome twice
        values = self.binner.feature_values(contexts)
        bins = self.binner.bins(values)
        choice = ExposureChoice([self.reveal_ratio if b is None else self.by_bin[b] for b in bins])
        known = [v for v in values if v is not None]
        self._last = (step, choice, bins, sum(known) / len(known) if known else None)
        return choice

    def observe(self, step: int, signals: TrainingSignals | None, credit=None) -> list[dict]:
        records = super().observe(step, signals, credit)
        if self._last is not None and self._last[0] == step:
            _, choice, bins, feature_mean = self._last
            records.append({"event": "assignment", "feature": self.feature, "feature_mean": feature_mean,
                            "reveal_ratio_mean": choice.mean,
                            "bin_shares": [sum(b == i for b in bins) / len(bins) for i in range(len(self.by_bin))],
                            "unknown_share": sum(b is None for b in bins) / len(bins)})
        return records

    def state_dict(self) -> dict:
        return {**super().state_dict(), **self.binner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.binner.load_state_dict(state)
        self._last = None
