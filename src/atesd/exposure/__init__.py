"""Exposure: how much of the reference the teacher sees at each step (the reveal ratio α).

`make_exposure_policy(cfg, total_steps)` builds the policy named by `ExposureConfig.policy`; the
training loop drives it with `decide(t, contexts)` and `observe(t, TrainingSignals(...), credit)` on rank 0
(protocol in `atesd.exposure.policies`). The learned policy is the ATESD controller (arXiv
2605.11458); its rewards are pure functions in `atesd.exposure.reward`.
"""

from atesd.exposure.config import ExposureConfig
from atesd.exposure.decision import ExposureDecision
from atesd.exposure.beta_policy import (
    BetaPolicyNetwork,
    controller_loss,
    default_target_entropy,
    entropy_penalty,
)
from atesd.exposure.learned import LearnedExposure
from atesd.exposure.credit import ProbeCredit, StepCredit
from atesd.exposure.per_example import PerExampleExposure
from atesd.exposure.by_feature import ByFeatureExposure
from atesd.exposure.policies import (
    ByDifficultyExposure,
    ExposureChoice,
    ExposurePolicy,
    GlobalLearnedExposure,
    FixedExposure,
    RandomExposure,
    ScheduleExposure,
    make_exposure_policy,
)
from atesd.exposure.reward import (
    DecisionReturn,
    decision_reward,
    discounted_progress,
    grounding_return,
    normalized_advantages,
    one_step_progress,
)
from atesd.exposure.state import (
    FEATURE_NAMES,
    N_FEATURES,
    ExampleContext,
    ExposureStateTracker,
    TrainingSignals,
    signals_from,
)

__all__ = [
    "ByDifficultyExposure",
    "ByFeatureExposure",
    "ExampleContext",
    "ExposureChoice",
    "GlobalLearnedExposure",
    "PerExampleExposure",
    "ProbeCredit",
    "StepCredit",
    "FEATURE_NAMES",
    "N_FEATURES",
    "BetaPolicyNetwork",
    "DecisionReturn",
    "ExposureConfig",
    "ExposureDecision",
    "ExposurePolicy",
    "ExposureStateTracker",
    "FixedExposure",
    "LearnedExposure",
    "RandomExposure",
    "ScheduleExposure",
    "TrainingSignals",
    "controller_loss",
    "decision_reward",
    "default_target_entropy",
    "discounted_progress",
    "entropy_penalty",
    "grounding_return",
    "make_exposure_policy",
    "normalized_advantages",
    "one_step_progress",
    "signals_from",
]
