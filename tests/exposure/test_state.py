"""State features of the controller: finite at step 0, moving averages, normalisation."""

from __future__ import annotations

import math

import pytest

from atesd.exposure import FEATURE_NAMES, ExposureStateTracker, TrainingSignals


def _signals(loss: float, probe: float | None = None) -> TrainingSignals:
    return TrainingSignals(distill_loss=loss, divergence_mean=0.1, top1_disagreement=0.2, probe_nll=probe,
                           self_confidence=-0.5, grounding_score=None)


def test_state_at_step_zero_is_finite_with_progress_zero_and_ratio_prior():
    features = ExposureStateTracker(total_steps=100, ema_decay=0.9).features(0)
    assert len(features) == len(FEATURE_NAMES)
    assert features == [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_progress_is_step_over_total_steps_and_ratio_ema_follows_the_used_ratio():
    tracker = ExposureStateTracker(total_steps=10, ema_decay=0.9)
    tracker.observe(1.0, _signals(1.0))
    features = tracker.features(5)
    assert features[0] == pytest.approx(0.5)
    assert features[1] == pytest.approx(0.5 + 0.1 * (1.0 - 0.5))


def test_normalised_features_are_clipped_z_scores_of_the_moving_averages():
    tracker = ExposureStateTracker(total_steps=100, ema_decay=0.0)  # decay 0: the EMA is the value
    for loss in (1.0, 3.0):
        tracker.observe(0.5, _signals(loss))
    loss_feature = tracker.features(2)[FEATURE_NAMES.index("distill_loss_ema")]
    assert loss_feature == pytest.approx((3.0 - 2.0) / (1.0 + 1e-6))
    for _ in range(50):
        tracker.observe(0.5, _signals(1.0))
    tracker.observe(0.5, _signals(1e6))
    assert tracker.features(53)[FEATURE_NAMES.index("distill_loss_ema")] == 5.0


def test_a_probe_nll_never_measured_reads_zero_and_a_constant_signal_stays_finite():
    tracker = ExposureStateTracker(total_steps=100, ema_decay=0.9)
    for _ in range(20):
        tracker.observe(0.5, _signals(0.3))
    features = tracker.features(20)
    assert features[FEATURE_NAMES.index("probe_nll_ema")] == 0.0
    assert all(math.isfinite(x) and abs(x) < 1e-6 for x in features[2:])


def test_training_signals_reject_non_finite_values_and_percentages():
    with pytest.raises(ValueError, match="distill_loss must be a finite float"):
        _signals(float("nan"))
    with pytest.raises(ValueError, match="not a percentage"):
        TrainingSignals(1.0, 0.1, 12.0, None, -0.5, None)
