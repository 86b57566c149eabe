"""The exposure policies behind one interface: baselines, hold windows, call order, resume."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from atesd.exposure import (
    ExposureConfig,
    ExposurePolicy,
    FixedExposure,
    LearnedExposure,
    RandomExposure,
    ScheduleExposure,
    TrainingSignals,
    make_exposure_policy,
)

SIGNALS = TrainingSignals(distill_loss=1.0, divergence_mean=0.1, top1_disagreement=0.05, probe_nll=1.2,
                          self_confidence=-0.5, grounding_score=-1.0)


def _ratios(policy, steps: int, start: int = 0) -> list[float]:
    ratios = []
    for step in range(start, steps):
        ratios.append(policy.ratio_for_step(step))
        policy.observe(step, SIGNALS)
    return ratios


@pytest.mark.parametrize(
    ("name", "cls"),
    [("fixed", FixedExposure), ("random", RandomExposure), ("schedule", ScheduleExposure),
     ("learned", LearnedExposure)],
)
def test_make_exposure_policy_builds_the_named_policy_behind_the_interface(name, cls):
    policy = make_exposure_policy(ExposureConfig(policy=name), total_steps=10)
    assert isinstance(policy, cls) and isinstance(policy, ExposurePolicy)
    assert policy.kind == name


def test_fixed_policy_returns_its_constant_every_step():
    policy = make_exposure_policy(ExposureConfig(policy="fixed", reveal_ratio=0.0), total_steps=9)
    assert _ratios(policy, 9) == [0.0] * 9


def test_fixed_policy_logs_one_decision_at_its_first_step():
    policy = make_exposure_policy(ExposureConfig(policy="fixed", reveal_ratio=0.5), total_steps=5)
    records = []
    for step in range(5):
        policy.ratio_for_step(step)
        records += policy.observe(step, SIGNALS)
    assert records == [{"event": "decision", "step": 0, "decision_step": 0,
                        "raw_reveal_ratio": 0.5, "reveal_ratio": 0.5}]


def test_schedule_is_linear_from_start_at_step_zero_to_end_at_the_last_step():
    cfg = ExposureConfig(policy="schedule", schedule_start=0.25, schedule_end=1.0)
    ratios = _ratios(make_exposure_policy(cfg, total_steps=4), 4)
    assert ratios == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_schedule_can_decrease_and_survives_a_single_step_run():
    cfg = ExposureConfig(policy="schedule", schedule_start=1.0, schedule_end=0.0)
    assert _ratios(make_exposure_policy(cfg, total_steps=3), 3) == pytest.approx([1.0, 0.5, 0.0])
    assert _ratios(make_exposure_policy(cfg, total_steps=1), 1) == [1.0]


@pytest.mark.parametrize("distribution", ["uniform", "beta"])
def test_random_policy_stays_in_ratio_bounds_and_is_deterministic_by_seed(distribution):
    cfg = ExposureConfig(policy="random", random_distribution=distribution, ratio_min=0.3,
                         ratio_max=0.6, random_beta_a=0.5, random_beta_b=0.5, hold_steps=1, seed=4)
    ratios = _ratios(make_exposure_policy(cfg, 200), 200)
    assert all(0.3 <= r <= 0.6 for r in ratios)
    assert ratios == _ratios(make_exposure_policy(cfg, 200), 200)
    other_seed = dataclasses.replace(cfg, seed=5)
    assert ratios != _ratios(make_exposure_policy(other_seed, 200), 200)


@pytest.mark.parametrize("name", ["random", "learned"])
def test_ratio_is_held_within_each_window_and_redrawn_across_windows(name):
    cfg = ExposureConfig(policy=name, hold_steps=4)
    ratios = _ratios(make_exposure_policy(cfg, 40), 40)
    windows = [ratios[i : i + 4] for i in range(0, 40, 4)]
    assert all(len(set(window)) == 1 for window in windows)
    assert len({window[0] for window in windows}) == len(windows)  # every window drew anew


def test_a_fresh_policy_started_mid_window_decides_at_once_and_realigns_to_windows():
    policy = make_exposure_policy(ExposureConfig(policy="random", hold_steps=4), 20)
    ratios = _ratios(policy, 12, start=6)  # steps 6, 7 | 8 … 11
    assert ratios[0] == ratios[1] and ratios[2] == ratios[5] and ratios[1] != ratios[2]


def test_repeating_ratio_for_step_before_observe_returns_the_same_ratio():
    policy = make_exposure_policy(ExposureConfig(policy="learned"), 10)
    assert policy.ratio_for_step(0) == policy.ratio_for_step(0)


def test_skipping_observe_or_a_step_is_an_error_that_names_the_fix():
    policy = make_exposure_policy(ExposureConfig(policy="random"), 10)
    policy.ratio_for_step(0)
    with pytest.raises(RuntimeError, match="before observe\\(0"):
        policy.ratio_for_step(1)
    policy.observe(0, SIGNALS)
    with pytest.raises(RuntimeError, match="next step is 1"):
        policy.ratio_for_step(2)
    with pytest.raises(RuntimeError, match="without a matching ratio_for_step"):
        policy.observe(1, SIGNALS)


def test_every_policy_accepts_a_step_without_signals():
    for name in ("fixed", "random", "schedule", "learned"):
        policy = make_exposure_policy(ExposureConfig(policy=name), 10)
        policy.ratio_for_step(0)
        policy.observe(0, None)
        policy.ratio_for_step(1)


@pytest.mark.parametrize("name", ["fixed", "random", "schedule"])
def test_baseline_resume_from_a_weights_only_checkpoint_equals_the_uninterrupted_run(name):
    cfg = ExposureConfig(policy=name, random_distribution="beta", hold_steps=4)
    uninterrupted = _ratios(make_exposure_policy(cfg, 37), 37)
    first = make_exposure_policy(cfg, 37)
    before = _ratios(first, 14)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = make_exposure_policy(cfg, 37)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert before + _ratios(second, 37, start=14) == uninterrupted


def test_by_difficulty_gives_each_example_its_levels_ratio():
    from atesd.exposure import ByDifficultyExposure, ExampleContext

    cfg = ExposureConfig(policy="by_difficulty", difficulty_ratios=[1.0, 1.0, 0.75, 0.5], reveal_ratio=0.25)
    policy = make_exposure_policy(cfg, total_steps=3)
    assert isinstance(policy, ByDifficultyExposure)
    contexts = [ExampleContext(level, True, -0.1, 0.2) for level in (1, 3, 4, 6, None)]
    assert policy.decide(0, contexts).ratios == [1.0, 0.75, 0.5, 0.5, 0.25]
    policy.observe(0, SIGNALS)
