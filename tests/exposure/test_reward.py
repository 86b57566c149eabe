"""Reward arithmetic of the exposure controller, and which steps' signals feed which decision."""

from __future__ import annotations

import math

import pytest

from atesd.exposure import (
    ExposureConfig,
    LearnedExposure,
    TrainingSignals,
    decision_reward,
    discounted_progress,
    grounding_return,
    normalized_advantages,
    one_step_progress,
)


def test_discounted_progress_matches_hand_computation_with_discount_and_clipped_increases():
    # ℓ = [5, 4, 4.5, 3, 3]: drops 1, −0.5 (clipped to 0), 1.5, 0; γ = 0.5
    # G_lp = 1·1 + 0.5·0 + 0.25·1.5 + 0.125·0 = 1.375
    assert discounted_progress([5.0, 4.0, 4.5, 3.0, 3.0], 0.5) == pytest.approx(1.375)


def test_discounted_progress_is_zero_when_the_loss_only_rises():
    assert discounted_progress([1.0, 2.0, 3.0], 0.9) == 0.0


def test_discounted_progress_with_discount_one_telescopes_for_a_falling_loss():
    losses = [3.0, 2.5, 2.0, 1.25, 1.0]
    assert discounted_progress(losses, 1.0) == pytest.approx(losses[0] - losses[-1])


def test_discounted_progress_rejects_a_single_loss():
    with pytest.raises(ValueError, match="L\\+1"):
        discounted_progress([1.0], 0.9)


def test_one_step_progress_is_the_signed_immediate_change():
    assert one_step_progress([2.0, 1.5]) == pytest.approx(0.5)
    assert one_step_progress([1.5, 2.0]) == pytest.approx(-0.5)  # no max(0, ·)
    with pytest.raises(ValueError, match="exactly 2"):
        one_step_progress([2.0, 1.5, 1.0])


def test_grounding_return_is_the_discounted_mean_of_scores():
    # γ = 0.5, g = [−1, −2, −4]: (−1 − 1 − 1) / (1 + 0.5 + 0.25) = −3 / 1.75
    assert grounding_return([-1.0, -2.0, -4.0], 0.5) == pytest.approx(-3.0 / 1.75)
    # a constant score is its own discounted mean
    assert grounding_return([-0.7] * 8, 0.9) == pytest.approx(-0.7)


def test_decision_reward_adds_weighted_grounding_and_ignores_missing_grounding():
    full = decision_reward(1.0, -2.0, 0.1)
    assert full.reward == pytest.approx(0.8)
    assert (full.progress_return, full.grounding_return) == (1.0, -2.0)
    assert decision_reward(1.0, None, 0.1).reward == 1.0


def test_normalized_advantages_have_zero_mean_and_unit_population_std():
    advantages = normalized_advantages([1.0, 2.0, 3.0, 6.0])
    assert sum(advantages) == pytest.approx(0.0, abs=1e-9)
    assert math.sqrt(sum(a * a for a in advantages) / 4) == pytest.approx(1.0, rel=1e-6)
    # hand case: mean 3, population std sqrt(14/4)
    assert advantages[0] == pytest.approx(-2.0 / math.sqrt(3.5), rel=1e-6)


def test_normalized_advantages_are_zero_for_one_decision_or_equal_rewards():
    assert normalized_advantages([0.3]) == [0.0]
    assert normalized_advantages([0.1, 0.1, 0.1, 0.1]) == [0.0, 0.0, 0.0, 0.0]
    assert all(math.isfinite(a) for a in normalized_advantages([5.0, 5.0]))


def _loss(step: int) -> float:
    # not monotone, so the max(0, ·) matters at some window boundaries
    return 10.0 - 0.5 * step + (0.9 if step % 3 == 0 else 0.0)


def _score(step: int) -> float:
    return -1.0 - 0.01 * step


def test_lookahead_windows_with_hold_4_and_lookahead_8_use_losses_t0_to_t0_plus_8():
    """The paper's reward (distillation loss, unscaled): H=4, L=8, B=4: decisions at 0, 4, 8, …;
    decision t0 closes after observe(t0+8) and uses ℓ_{t0} … ℓ_{t0+8} and g_{t0} … g_{t0+7};
    overlapping lookaheads share steps."""
    cfg = ExposureConfig(policy="learned", hold_steps=4, lookahead_steps=8, discount=0.9,
                         grounding_weight=0.1, decisions_per_update=4, progress_signal="distill_loss",
                         grounding_scale="none")
    policy = LearnedExposure(cfg, total_steps=40)
    credits, updates, decisions = [], [], []
    for step in range(37):
        policy.ratio_for_step(step)
        signals = TrainingSignals(distill_loss=_loss(step), divergence_mean=0.1, top1_disagreement=0.1,
                                  probe_nll=None, self_confidence=-0.5,
                                  grounding_score=_score(step))
        for record in policy.observe(step, signals):
            by_event = {"credit": credits, "update": updates, "decision": decisions}
            by_event[record["event"]].append(record)

    assert [d["decision_step"] for d in decisions] == list(range(0, 37, 4))
    # closures at 8, 12, …, 36 (t0 = 0 … 28): 8 closed, two updates of B = 4
    assert [u["step"] for u in updates] == [20, 36]
    assert [u["decision_steps"] for u in updates] == [[0, 4, 8, 12], [16, 20, 24, 28]]
    for credit in credits:
        t0 = credit["decision_step"]
        assert credit["closed_step"] == t0 + 8
        expected_lp = discounted_progress([_loss(t) for t in range(t0, t0 + 9)], 0.9)
        expected_gt = grounding_return([_score(t) for t in range(t0, t0 + 8)], 0.9)
        assert credit["progress_return"] == pytest.approx(expected_lp, abs=1e-12)
        assert credit["grounding_return"] == pytest.approx(expected_gt, abs=1e-12)
        assert credit["reward"] == pytest.approx(expected_lp + 0.1 * expected_gt, abs=1e-12)
    # hand check of decision 0: ℓ_0…ℓ_8 = 10.9, 9.5, 9, 9.4, 8, 7.5, 7.9, 6.5, 6; the rises
    # 9 → 9.4 and 7.5 → 7.9 count as 0
    drops = [1.4, 0.5, 0.0, 1.4, 0.5, 0.0, 1.4, 0.5]
    hand = sum(0.9**i * d for i, d in enumerate(drops))
    assert credits[0]["progress_return"] == pytest.approx(hand)


def test_one_step_reward_closes_each_decision_after_the_next_step():
    cfg = ExposureConfig(policy="learned", hold_steps=4, reward="one_step", grounding_weight=0.0,
                         decisions_per_update=2, progress_signal="distill_loss")
    policy = LearnedExposure(cfg, total_steps=10)
    credits = []
    for step in range(9):
        policy.ratio_for_step(step)
        signals = TrainingSignals(distill_loss=_loss(step), divergence_mean=0.1, top1_disagreement=0.1,
                                  probe_nll=None, self_confidence=-0.5, grounding_score=None)
        credits += [r for r in policy.observe(step, signals) if r["event"] == "credit"]
    # decisions at 0 and 4 close at 1 and 5; the update happens at step 5
    closures = [(c["decision_step"], c["closed_step"], c["step"]) for c in credits]
    assert closures == [(0, 1, 5), (4, 5, 5)]
    assert credits[0]["progress_return"] == pytest.approx(_loss(0) - _loss(1))
    assert credits[0]["grounding_return"] is None


def test_with_lookahead_equal_to_the_hold_window_no_term_comes_from_another_decisions_steps():
    """L = H = 4 (the default): decision t0's G_gt uses g of steps t0 … t0+3, all trained under its own
    α, and G_lp the probe NLL ℓ_{t0} … ℓ_{t0+4}, where ℓ_{t0+4} is measured before step t0+4's update,
    i.e. on the weights the window's four updates produced."""
    cfg = ExposureConfig(policy="learned", hold_steps=4, lookahead_steps=4, decisions_per_update=2,
                         grounding_weight=0.1, grounding_scale="none", discount=0.9)
    policy = LearnedExposure(cfg, total_steps=20)
    window_of = {}
    credits = []
    for step in range(13):
        policy.ratio_for_step(step)
        window_of[step] = step // 4
        signals = TrainingSignals(distill_loss=1.0, divergence_mean=0.1, top1_disagreement=0.1,
                                  probe_nll=10.0 - 0.5 * step, self_confidence=-0.5,
                                  grounding_score=-float(step // 4))  # g tags the window it was measured in
        credits += [r for r in policy.observe(step, signals) if r["event"] == "credit"]
    assert [c["decision_step"] for c in credits] == [0, 4]
    for credit in credits:
        window = credit["decision_step"] // 4
        assert credit["grounding_return"] == pytest.approx(-float(window))  # only its own window's g
        assert credit["closed_step"] == credit["decision_step"] + 4
        expected_lp = discounted_progress([10.0 - 0.5 * t for t in range(credit["decision_step"],
                                                                           credit["decision_step"] + 5)], 0.9)
        assert credit["progress_return"] == pytest.approx(expected_lp)


def test_zscore_scaling_divides_each_part_by_its_running_std_before_weighting():
    from atesd.exposure.reward import RunningScale

    scale = RunningScale()
    assert scale.scaled(2.0) == 0.0  # one value: no scale yet
    value = scale.scaled(4.0)  # values 2, 4: population std 1
    assert value == pytest.approx(4.0)
    assert scale.rms() == pytest.approx(((4 + 16) / 2) ** 0.5)
