"""The untrained exposure policies' shared mechanics, and the fixed ratio they all start from.

`GlobalDecisions` gives a policy with one α per step (`ratio_for_step`) the loop's `decide`;
`HeldRatioPolicy` keeps a decision per window, a record per decision and the step clock, with an
exact `state_dict`; `FixedExposure` is α = reveal_ratio at every step (OPSD is reveal_ratio = 1).
The protocol they implement is `atesd.exposure.policies.ExposurePolicy`.
"""

from __future__ import annotations

from typing import Sequence

from atesd.exposure.decision import ExposureChoice, ExposureDecision, StepClock
from atesd.exposure.state import ExampleContext, TrainingSignals


class GlobalDecisions:
    """`decide` for a policy with one α per step (`ratio_for_step`) for the whole batch."""

    def decide(self, step: int, contexts: Sequence[ExampleContext]) -> ExposureChoice:
        ratio = self.ratio_for_step(step)
        counterfactual = getattr(self, "counterfactual_ratio", lambda: None)()
        return ExposureChoice([ratio] * len(contexts), None if counterfactual is None else [counterfactual] * len(contexts))


class HeldRatioPolicy(GlobalDecisions):
    """Shared mechanics of the untrained policies: a decision per window, a record per decision."""

    kind = ""
    needs_grounding_score = False
    needs_probe_nll = False
    needs_credit = False
    needs_full_divergence = False
    probe_every = 1

    def wants_credit(self, step: int) -> bool:
        return False

    def __init__(self) -> None:
        self._clock = StepClock()
        self._current: ExposureDecision | None = None

    def _window(self, step: int) -> int:
        raise NotImplementedError

    def _choose(self, step: int, window: int) -> tuple[float, float]:
        """(raw_reveal_ratio, reveal_ratio) for the window starting at step t."""
        raise NotImplementedError

    def ratio_for_step(self, step: int) -> float:
        if self._clock.begin(step):
            window = self._window(step)
            if self._current is None or self._current.window != window:
                sampled, used = self._choose(step, window)
                self._current = ExposureDecision(step, window, sampled, used)
        return self._current.reveal_ratio

    def observe(self, step: int, signals: TrainingSignals | None, credit=None) -> list[dict]:
        self._clock.end(step)
        return [self._current.record()] if self._current.step == step else []

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "clock": self._clock.state_dict(),
            "current": None if self._current is None else self._current.to_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(
                f"this checkpoint holds a {state.get('kind')!r} exposure policy, not "
                f"{self.kind!r}: resume with the exposure.policy the run was started with"
            )
        self._clock.load_state_dict(state["clock"])
        current = state["current"]
        self._current = None if current is None else ExposureDecision.from_state(current)


class FixedExposure(HeldRatioPolicy):
    """α = reveal_ratio at every step; one decision record, at the first step."""

    kind = "fixed"

    def __init__(self, reveal_ratio: float) -> None:
        super().__init__()
        self.reveal_ratio = reveal_ratio

    def _window(self, step: int) -> int:
        return 0

    def _choose(self, step: int, window: int) -> tuple[float, float]:
        return self.reveal_ratio, self.reveal_ratio
