"""The controller's view of training: the per-step signals and the state vector s built from them.

Each student step, the training loop hands a `TrainingSignals` record to the exposure policy; the
learned policy folds it into moving averages and, at the start of a hold window, reads the state
vector s (ATESD, arXiv 2605.11458, controller section) with `ExposureStateTracker.features`.

Features, in the order of `FEATURE_NAMES` (N_FEATURES = 7):
    progress               t/T, clipped to [0, 1] (t the 0-based step, T the total steps)
    ratio_ema              EMA of the reveal ratio α actually used; starts at 0.5
    distill_loss_ema       EMA of the distillation loss                     (normalised)
    divergence_mean_ema    EMA of the training divergence D per token       (normalised)
    top1_disagreement_ema  EMA of the top-1 disagreement rate               (normalised)
    probe_nll_ema          EMA of the student's NLL on the probe set        (normalised)
    self_confidence        latest batch's mean log-prob of sampled tokens   (normalised)

EMA: ema ← ema + (1 − d)·(x − ema) with d = ema_decay, started at the first value seen (no bias
towards 0). Normalisation of the five signal features: a running mean and population standard
deviation per feature (Welford's algorithm, over every value the feature has taken), then
z = (x − mean) / (std + 1e-6), clipped to [−5, 5]. A feature with fewer than two values, or never
seen (a probe NLL that is never logged), reads 0 — so the state is finite and well scaled at step 0.

Departures from the paper:
  1. The paper's "teacher–student mismatch" is two features here (mean KL and top-1
     disagreement), so s has 7 numbers instead of 6.
  2. The paper says the state is "normalised" without saying how; the running z-score above is ours.
     progress and ratio_ema already lie in [0, 1] and are used as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FEATURE_NAMES: tuple[str, ...] = (
    "progress",
    "ratio_ema",
    "distill_loss_ema",
    "divergence_mean_ema",
    "top1_disagreement_ema",
    "probe_nll_ema",
    "self_confidence",
)
N_FEATURES = len(FEATURE_NAMES)

_NORMALISED = FEATURE_NAMES[2:]
_Z_CLIP = 5.0
_STD_FLOOR = 1e-6
_INITIAL_RATIO_EMA = 0.5  # the mean of the initial policy Beta(2, 2)


@dataclass(frozen=True)
class TrainingSignals:
    """What the training loop measured at one student step t (global means over all ranks).

    distill_loss: the distillation loss of step t's batch (before step t's update).
    divergence_mean: mean per-token training divergence D(p_T^α ‖ p_S) (the loss's own kind:
        forward KL, reverse KL or JSD) over the batch's rollout tokens: the teacher–student mismatch.
    top1_disagreement: fraction of rollout tokens where teacher and student argmax differ, [0, 1].
    probe_nll: student NLL per token of the probe set's reference solutions, measured on θ_t
        (before step t's update).
    self_confidence: mean log-prob the student gave its own sampled tokens (≤ 0).
    grounding_score: g_t, the mean log-prob the teacher at step t's α gives the withheld reference
        (teacher-forced).
    None marks a signal the step did not measure; a policy that needs it raises (`require`).
    """

    distill_loss: float
    divergence_mean: float
    top1_disagreement: float | None
    probe_nll: float | None
    self_confidence: float | None
    grounding_score: float | None

    def require(self, *names: str) -> None:
        """Raise if any of these signals is missing: a needed signal is never read as a zero."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"the exposure policy needs {', '.join(missing)} but step signals lack "
                             f"{'it' if len(missing) == 1 else 'them'}: a full-vocabulary divergence gives "
                             "top1_disagreement, sampling gives self_confidence, the probe the rest")

    def __post_init__(self) -> None:
        for name in (
            "distill_loss",
            "divergence_mean",
            "top1_disagreement",
            "probe_nll",
            "self_confidence",
            "grounding_score",
        ):
            value = getattr(self, name)
            if value is None and name not in ("distill_loss", "divergence_mean"):
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"TrainingSignals.{name} must be a finite float, got {value!r}; pass a Python "
                    "float (tensor.item()) and skip the step's exposure update if the loss is NaN"
                )
        if self.top1_disagreement is not None and not 0.0 <= self.top1_disagreement <= 1.0:
            raise ValueError(
                f"TrainingSignals.top1_disagreement is a rate in [0, 1], got "
                f"{self.top1_disagreement}; pass the fraction, not a percentage or a count"
            )


class RunningNormalizer:
    """Running mean and population variance of one scalar (Welford), and the clipped z-score."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def normalize(self, value: float) -> float:
        """z = (value − mean) / (std + 1e-6), clipped to [−5, 5]; 0 before two values were seen."""
        if self.count < 2:
            return 0.0
        std = math.sqrt(self.m2 / self.count)
        z = (value - self.mean) / (std + _STD_FLOOR)
        return max(-_Z_CLIP, min(_Z_CLIP, z))

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.mean = float(state["mean"])
        self.m2 = float(state["m2"])


class ExposureStateTracker:
    """Moving averages of the training signals, and the state vector s [N_FEATURES] they give."""

    def __init__(self, total_steps: int, ema_decay: float) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self.ema_decay = ema_decay
        self.ratio_ema = _INITIAL_RATIO_EMA
        self.values: dict[str, float | None] = {name: None for name in _NORMALISED}
        self.normalizers = {name: RunningNormalizer() for name in _NORMALISED}

    def features(self, step: int) -> list[float]:
        """s at step t: progress t/T plus what was observed at steps < t (order: FEATURE_NAMES)."""
        progress = min(1.0, max(0.0, step / self.total_steps))
        normalised = []
        for name in _NORMALISED:
            value = self.values[name]
            normalised.append(0.0 if value is None else self.normalizers[name].normalize(value))
        return [progress, self.ratio_ema, *normalised]

    def observe(self, reveal_ratio: float, signals: TrainingSignals) -> None:
        """Fold in step t: the α used at t and the signals measured at t."""
        self.ratio_ema = self._ema(self.ratio_ema, reveal_ratio)
        raw = {
            "distill_loss_ema": signals.distill_loss,
            "divergence_mean_ema": signals.divergence_mean,
            "top1_disagreement_ema": signals.top1_disagreement,
            "probe_nll_ema": signals.probe_nll,
        }
        measured = [name for name, value in raw.items() if value is not None]
        for name in measured:
            previous = self.values[name]
            value = float(raw[name])
            self.values[name] = value if previous is None else self._ema(previous, value)
        # Self-confidence is the latest batch's value (the paper: "the batch's"), not an average.
        if signals.self_confidence is not None:
            self.values["self_confidence"] = float(signals.self_confidence)
            measured.append("self_confidence")
        # A feature's statistics only count the steps where it was measured.
        for name in measured:
            self.normalizers[name].update(self.values[name])

    def _ema(self, average: float, value: float) -> float:
        return average + (1.0 - self.ema_decay) * (float(value) - average)

    def state_dict(self) -> dict:
        return {
            "ratio_ema": self.ratio_ema,
            "values": dict(self.values),
            "normalizers": {name: n.state_dict() for name, n in self.normalizers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.ratio_ema = float(state["ratio_ema"])
        self.values = {
            name: None if state["values"][name] is None else float(state["values"][name])
            for name in _NORMALISED
        }
        for name in _NORMALISED:
            self.normalizers[name].load_state_dict(state["normalizers"][name])


@dataclass(frozen=True)
class ExampleContext:
    """What a per-example exposure decision may look at (ours): the problem's difficulty label (None
    without one), whether the student's rollout reached the right answer, its mean token log-prob
    (self-confidence), its length as a fraction of max_new_tokens, the problem's id (rollouts of one
    problem share it: its running pass rate) and, when the policy asks for it, the mean per-token
    divergence of the teacher at full exposure (α = 1) from the student on the rollout."""

    difficulty: int | None
    correct: bool
    self_confidence: float
    length_fraction: float
    problem_id: str | None = None
    full_exposure_divergence: float | None = None


EXAMPLE_FEATURE_NAMES: tuple[str, ...] = ("difficulty", "has_difficulty", "correct", "self_confidence",
                                          "length_fraction")


def example_features(context: ExampleContext, max_difficulty: int = 5) -> list[float]:
    """The per-example part of a contextual state (order: EXAMPLE_FEATURE_NAMES): difficulty / max
    (0 without a label), whether it has one, correct (0/1), self-confidence clipped to [−5, 0] / 5,
    length fraction."""
    known = context.difficulty is not None
    return [min(1.0, (context.difficulty or 0) / max_difficulty), float(known), float(context.correct),
            max(-5.0, min(0.0, context.self_confidence)) / 5.0, min(1.0, max(0.0, context.length_fraction))]


def signals_from(summary, measured: dict) -> TrainingSignals:
    """The controller's view of step t: the step's `atesd.metrics.StepSummary` and the probe's
    measurements on θ_t (`atesd.probe.ExposureProbe.measure`)."""
    return TrainingSignals(
        distill_loss=summary.loss,
        divergence_mean=summary.divergence_mean,
        top1_disagreement=summary.top1_disagreement,
        probe_nll=measured.get("probe_nll"),
        self_confidence=summary.self_confidence,
        grounding_score=measured.get("grounding_score"),
    )
