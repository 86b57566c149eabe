"""ExposureConfig: plain-typed defaults that OmegaConf accepts, and validation with remedies."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from atesd.exposure import ExposureConfig


def test_defaults_match_the_method_notes():
    cfg = ExposureConfig()
    assert (cfg.hold_steps, cfg.lookahead_steps, cfg.discount) == (4, 8, 0.9)
    assert (cfg.grounding_weight, cfg.decisions_per_update, cfg.entropy_coef) == (0.1, 4, 0.1)
    assert (cfg.ratio_min, cfg.ratio_max, cfg.target_entropy) == (0.05, 1.0, None)


def test_config_round_trips_through_an_omegaconf_structured_config():
    schema = OmegaConf.structured(ExposureConfig)
    overrides = OmegaConf.from_dotlist(["policy=learned", "target_entropy=-0.5"])
    merged = OmegaConf.merge(schema, overrides)
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, ExposureConfig)
    assert (cfg.policy, cfg.target_entropy) == ("learned", -0.5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"policy": "adaptive"}, "exposure.policy must be one of"),
        ({"reveal_ratio": 1.5}, "reveal_ratio must lie in \\[0, 1\\]"),
        ({"ratio_min": 0.6, "ratio_max": 0.4}, "policy=fixed"),
        ({"hold_steps": 0}, "try 4"),
        ({"decisions_per_update": 1}, "never learns"),
        ({"discount": 0.0}, "discount must lie in \\(0, 1\\]"),
        ({"reward": "lookahead"}, "exposure.reward must be one of"),
        ({"progress_signal": "kl"}, "exposure.progress_signal must be one of"),
        ({"random_beta_a": 0.0}, "Beta shape"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"target_entropy": float("nan")}, "null uses the entropy of Beta\\(2, 2\\)"),
    ],
)
def test_invalid_fields_are_rejected_with_a_remedy(overrides, message):
    with pytest.raises(ValueError, match=message):
        ExposureConfig(**overrides)
