"""What an exposure policy decided and when: the decision record and the call-order guard.

Every policy holds one `ExposureDecision` at a time: the reveal ratio α chosen at `step` for the
hold window `window`. `StepClock` enforces the per-step calling protocol shared by all policies:

    ratio_for_step(t)  →  (the loop trains step t with that α)  →  observe(t, signals)

for t = t_first, t_first+1, … with no step skipped. `ratio_for_step(t)` may be repeated before
`observe(t)` and returns the same α. A policy built fresh may start at any step; a policy loaded
from a `state_dict` continues at the step after the last one observed.

No departure from the paper: this is bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

from atesd.exposure.state import FEATURE_NAMES


@dataclass(frozen=True)
class ExposureDecision:
    """One choice of α, used from `step` until the policy's window changes.

    raw_reveal_ratio is α_raw (the learned and Beta-random policies sample it, then clip);
    reveal_ratio is the α the loop trains with. state, beta_a, beta_b are set by the learned policy
    only: the state vector s [N_FEATURES] it saw and the Beta(a, b) it sampled from.
    counterfactual_raw_ratio: α′_raw, a second draw from the same Beta, scored but never trained
    with (reward="counterfactual" only).
    """

    step: int
    window: int
    raw_reveal_ratio: float
    reveal_ratio: float
    state: tuple[float, ...] = ()
    beta_a: float | None = None
    beta_b: float | None = None
    counterfactual_raw_ratio: float | None = None

    def record(self, state_names: tuple[str, ...] = FEATURE_NAMES) -> dict:
        """The `exposure.jsonl` line for this decision (event "decision"); `state_names` name the
        entries of `state` (the controller's `exposure.state_features`)."""
        record: dict = {
            "event": "decision",
            "step": self.step,
            "decision_step": self.step,
            "raw_reveal_ratio": self.raw_reveal_ratio,
            "reveal_ratio": self.reveal_ratio,
        }
        if self.beta_a is not None and self.beta_b is not None:
            record["state"] = dict(zip(state_names, self.state))
            record["beta_a"] = self.beta_a
            record["beta_b"] = self.beta_b
            record["beta_mean"] = self.beta_a / (self.beta_a + self.beta_b)
        if self.counterfactual_raw_ratio is not None:
            record["counterfactual_raw_ratio"] = self.counterfactual_raw_ratio
        return record

    def to_state(self) -> dict:
        return {
            "step": self.step,
            "window": self.window,
            "raw_reveal_ratio": self.raw_reveal_ratio,
            "reveal_ratio": self.reveal_ratio,
            "state": list(self.state),
            "beta_a": self.beta_a,
            "beta_b": self.beta_b,
            "counterfactual_raw_ratio": self.counterfactual_raw_ratio,
        }

    @classmethod
    def from_state(cls, state: dict) -> ExposureDecision:
        return cls(
            step=int(state["step"]),
            window=int(state["window"]),
            raw_reveal_ratio=float(state["raw_reveal_ratio"]),
            reveal_ratio=float(state["reveal_ratio"]),
            state=tuple(float(x) for x in state["state"]),
            beta_a=None if state["beta_a"] is None else float(state["beta_a"]),
            beta_b=None if state["beta_b"] is None else float(state["beta_b"]),
            counterfactual_raw_ratio=None if state.get("counterfactual_raw_ratio") is None
            else float(state["counterfactual_raw_ratio"]),
        )


@dataclass(frozen=True)
class ExposureChoice:
    """The reveal ratio of every example of a step's global batch, and the counterfactual ratio each
    is also scored with (reward="counterfactual"; None otherwise)."""

    ratios: list[float]
    counterfactual: list[float] | None = None

    @property
    def mean(self) -> float:
        return sum(self.ratios) / len(self.ratios)


class StepClock:
    """Guards the order ratio_for_step(t) → observe(t) → ratio_for_step(t+1) → …"""

    def __init__(self) -> None:
        self.decided: int | None = None  # the last step passed to ratio_for_step
        self.observed: int | None = None  # the last step passed to observe

    def begin(self, step: int) -> bool:
        """Enter step t in ratio_for_step; False when t was already entered and not yet observed."""
        if self.decided is not None and self.decided != self.observed:
            if step == self.decided:
                return False
            raise RuntimeError(
                f"ratio_for_step({step}) called before observe({self.decided}, signals): "
                f"call observe once per step, right after the student update of step {self.decided}"
            )
        if step < 0 or (self.observed is not None and step != self.observed + 1):
            expected = 0 if self.observed is None else self.observed + 1
            raise RuntimeError(
                f"ratio_for_step({step}) out of order: the next step is {expected}. Steps must be "
                "consecutive; after a resume, load the policy's state_dict from the same checkpoint"
            )
        self.decided = step
        return True

    def end(self, step: int) -> None:
        """Leave step t in observe; t must be the step last entered by ratio_for_step."""
        if self.decided is None or step != self.decided or self.observed == step:
            raise RuntimeError(
                f"observe({step}) without a matching ratio_for_step({step}): call "
                "ratio_for_step(t) before training step t, and observe(t, signals) once after it"
            )
        self.observed = step

    def state_dict(self) -> dict:
        return {"decided": self.decided, "observed": self.observed}

    def load_state_dict(self, state: dict) -> None:
        self.decided = state["decided"]
        self.observed = state["observed"]
