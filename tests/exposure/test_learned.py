"""The ATESD controller: initial policy, entropy penalty, learning on a bandit, exact resume."""

from __future__ import annotations

import io
import math
import statistics

import pytest
import torch

from atesd.exposure import (
    FEATURE_NAMES,
    N_FEATURES,
    BetaPolicyNetwork,
    ExposureConfig,
    LearnedExposure,
    TrainingSignals,
    controller_loss,
    default_target_entropy,
    entropy_penalty,
    grounding_return,
    make_exposure_policy,
)


def _signals(step: int, ratio: float, grounding: float | None = None) -> TrainingSignals:
    """Synthetic but deterministic signals of step t trained at ratio α."""
    return TrainingSignals(
        distill_loss=2.0 - 0.03 * step + 0.1 * math.sin(step) + 0.2 * ratio,
        divergence_mean=0.05 + 0.1 * ratio,
        top1_disagreement=0.02 + 0.05 * ratio,
        probe_nll=1.5 - 0.01 * step + 0.02 * math.cos(3 * step),
        self_confidence=-0.4 - 0.01 * math.sin(step),
        grounding_score=(
            -1.0 - 0.5 * ratio + 0.05 * math.cos(step) if grounding is None else grounding
        ),
    )


def test_initial_policy_is_close_to_beta_2_2():
    network = BetaPolicyNetwork(N_FEATURES, 64, seed=0)
    states = torch.randn(16, N_FEATURES, generator=torch.Generator().manual_seed(1))
    beta_a, beta_b = network(states)
    assert torch.allclose(beta_a, torch.full_like(beta_a, 2.0), atol=0.05)
    assert torch.allclose(beta_b, torch.full_like(beta_b, 2.0), atol=0.05)


def test_network_input_size_follows_the_feature_count():
    assert len(FEATURE_NAMES) == N_FEATURES == 7
    assert BetaPolicyNetwork(N_FEATURES, 8, seed=0).layers[0].in_features == N_FEATURES


def test_building_a_controller_does_not_move_the_global_rng():
    before = torch.get_rng_state()
    LearnedExposure(ExposureConfig(policy="learned"), total_steps=10)
    assert torch.equal(before, torch.get_rng_state())


def test_entropy_penalty_is_exactly_zero_at_or_below_target_and_quadratic_above():
    target = default_target_entropy()
    assert target == pytest.approx(-0.1251, abs=1e-3)  # entropy of Beta(2, 2)
    assert entropy_penalty(torch.tensor(target - 0.3), target, 0.1).item() == 0.0
    assert entropy_penalty(torch.tensor(target), target, 0.1).item() == 0.0
    above = entropy_penalty(torch.tensor(target + 0.2, dtype=torch.float64), target, 0.1).item()
    assert above == pytest.approx(0.1 * 0.2**2)


def _network_with_output_bias(bias: float) -> BetaPolicyNetwork:
    network = BetaPolicyNetwork(N_FEATURES, 8, seed=0)
    with torch.no_grad():
        network.layers[-1].weight.zero_()
        network.layers[-1].bias.fill_(bias)
    return network


def test_controller_loss_penalises_a_policy_wider_than_the_target_only():
    states = torch.zeros(4, N_FEATURES)
    raw = torch.tensor([0.2, 0.4, 0.6, 0.8])
    zero_advantages = torch.zeros(4)
    target = default_target_entropy()
    # bias −6: a = b ≈ 1 (uniform, entropy ≈ 0 > target) → positive penalty
    wide_network = _network_with_output_bias(-6.0)
    _, wide = controller_loss(wide_network, states, raw, zero_advantages, target, 0.1)
    assert wide["entropy"] > target and wide["entropy_penalty"] > 0.0
    # bias 3: a = b ≈ 4 (narrower than Beta(2, 2)) → penalty exactly 0
    narrow_network = _network_with_output_bias(3.0)
    _, narrow = controller_loss(narrow_network, states, raw, zero_advantages, target, 0.1)
    assert narrow["entropy"] < target and narrow["entropy_penalty"] == 0.0
    assert narrow["loss"] == pytest.approx(narrow["policy_loss"])


def test_controller_loss_is_minus_mean_advantage_times_log_prob_of_raw_ratio():
    network = _network_with_output_bias(math.log(math.e - 1.0))  # exactly Beta(2, 2)
    raw = torch.tensor([0.25, 0.75])
    advantages = torch.tensor([1.0, -1.0])
    loss, metrics = controller_loss(network, torch.zeros(2, N_FEATURES), raw, advantages, 0.0, 0.1)
    log_prob = torch.distributions.Beta(2.0, 2.0).log_prob(raw)  # equal by symmetry
    expected = -(advantages * log_prob).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["entropy_penalty"] == 0.0


def test_controller_loss_log_prob_stays_finite_for_raw_ratios_at_the_edges():
    network = _network_with_output_bias(0.0)
    loss, _ = controller_loss(network, torch.zeros(2, N_FEATURES), torch.tensor([0.0, 1.0]),
                              torch.tensor([1.0, -1.0]), default_target_entropy(), 0.1)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_learns_a_bandit_peaked_at_ratio_0_7(seed):
    """R = −(α − 0.7)² through the public API: H = 2, L = 1 so G_gt = g_{t0+1} is measured at the
    decision's own α; λ_gt = 1 and a constant loss (G_lp = 0). The default lr 1e-3 suffices: the
    mean overshoots to ≈ 0.75–0.8 by update 100, then wanders within ≈ ±0.05 of 0.72 (the best
    Beta mean at finite concentration sits slightly above 0.7, where the variance is smaller).
    Over seeds 0–9 the mean after 200 updates lay in [0.67, 0.77]."""
    cfg = ExposureConfig(policy="learned", hold_steps=2, lookahead_steps=1, grounding_weight=1.0,
                         decisions_per_update=4, seed=seed)
    total_steps = 200 * 4 * 2  # 200 updates × B decisions × H steps
    policy = LearnedExposure(cfg, total_steps)
    for step in range(total_steps):
        ratio = policy.ratio_for_step(step)
        policy.observe(step, _signals(step, 0.5, grounding=-((ratio - 0.7) ** 2)))
    assert policy.updates == 200
    with torch.no_grad():
        beta_a, beta_b = policy.network(torch.tensor([policy.tracker.features(total_steps)]))
    mean = (beta_a / (beta_a + beta_b)).item()
    assert abs(mean - 0.7) < 0.1, f"policy mean {mean:.3f} after {policy.updates} updates"


def _run(policy, steps, start=0):
    ratios, records = [], []
    for step in range(start, steps):
        ratio = policy.ratio_for_step(step)
        ratios.append(ratio)
        records.extend(policy.observe(step, _signals(step, ratio)))
    return ratios, records


def test_resume_mid_window_and_mid_lookahead_equals_the_uninterrupted_run():
    cfg = ExposureConfig(policy="learned", hold_steps=4, lookahead_steps=8, decisions_per_update=3,
                         seed=3)
    total = 37
    ratios, records = _run(make_exposure_policy(cfg, total), total)
    assert sum(r["event"] == "update" for r in records) == 2

    first = make_exposure_policy(cfg, total)
    ratios_a, records_a = _run(first, 14)  # steps 0 … 13
    state = first.state_dict()
    # step 13 is inside hold window 12–15, two lookaheads are open and one decision waits for B
    assert state["current"]["step"] == 12
    assert [la["decision"]["step"] for la in state["open"]] == [8, 12]
    assert [c["decision"]["step"] for c in state["closed"]] == [0, 4]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)
    _run(first, 20, start=14)  # the saved state must not alias the live policy

    second = make_exposure_policy(cfg, total)
    second.load_state_dict(restored)
    ratios_b, records_b = _run(second, total, start=14)
    assert ratios_a + ratios_b == ratios
    assert records_a + records_b == records


def test_signals_none_drops_the_open_lookaheads_and_keeps_steps_consecutive():
    cfg = ExposureConfig(policy="learned", hold_steps=4, lookahead_steps=8)
    policy = LearnedExposure(cfg, total_steps=20)
    _run(policy, 10)
    policy.ratio_for_step(10)
    dropped = policy.observe(10, None)
    assert [r["decision_step"] for r in dropped if r["event"] == "dropped"] == [4, 8]
    assert policy.state_dict()["open"] == []
    policy.ratio_for_step(11)  # the run continues


def test_missing_grounding_score_is_an_error_when_it_is_weighted():
    policy = LearnedExposure(ExposureConfig(policy="learned", grounding_weight=0.1), 10)
    ratio = policy.ratio_for_step(0)
    signals = TrainingSignals(1.0, 0.1, 0.1, 1.2, -0.5, grounding_score=None)
    with pytest.raises(ValueError, match="grounding_weight=0"):
        policy.observe(0, signals)
    policy.observe(0, _signals(0, ratio))  # the failed call did not advance the step


def test_probe_nll_progress_signal_requires_a_probe_nll_every_step():
    cfg = ExposureConfig(policy="learned", progress_signal="probe_nll")
    policy = LearnedExposure(cfg, 10)
    policy.ratio_for_step(0)
    with pytest.raises(ValueError, match="probe NLL every step"):
        policy.observe(0, TrainingSignals(1.0, 0.1, 0.1, None, -0.5, -1.0))


def test_loading_another_policy_kind_is_refused():
    fixed_state = make_exposure_policy(ExposureConfig(policy="fixed"), 10).state_dict()
    with pytest.raises(ValueError, match="exposure.policy"):
        LearnedExposure(ExposureConfig(policy="learned"), 10).load_state_dict(fixed_state)


def _run_counterfactual(cfg, total_steps, paired_credit):
    """Drive a counterfactual policy: paired_credit(α, α′) is the step's credit difference."""
    from atesd.exposure import StepCredit

    policy = make_exposure_policy(cfg, total_steps)
    records = []
    for step in range(total_steps):
        choice = policy.decide(step, [None])
        credit = None
        if policy.wants_credit(step):
            credit = StepCredit((0,), (paired_credit(choice.ratios[0], choice.counterfactual[0]),), (0.0,))
        records += policy.observe(step, _signals(step, choice.ratios[0]), credit)
    return policy, records


def test_counterfactual_reward_is_the_windows_paired_credit_scaled_by_its_running_rms():
    cfg = ExposureConfig(policy="learned", reward="counterfactual", hold_steps=2, decisions_per_update=2, seed=4)
    policy, records = _run_counterfactual(cfg, 8, lambda a, b: a - b)
    decisions = [r for r in records if r["event"] == "decision"]
    credits = [r for r in records if r["event"] == "credit"]
    assert [d["decision_step"] for d in decisions] == [0, 2, 4, 6]
    assert all("counterfactual_raw_ratio" in d for d in decisions)
    # each decision is credited with α − α′ of its window's first step, closed at the window's end
    assert [(c["decision_step"], c["closed_step"]) for c in credits] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    squares = []
    for c in credits:
        assert c["reward"] == pytest.approx(c["reveal_ratio"] - c["counterfactual_ratio"], abs=1e-12)
    for batch in (credits[:2], credits[2:]):
        squares += [c["reward"] ** 2 for c in batch]
        rms = math.sqrt(sum(squares) / len(squares))
        for c in batch:
            assert c["advantage"] == pytest.approx(c["reward"] / rms)
    assert policy.updates == 2


def test_counterfactual_reward_never_credits_a_window_with_another_windows_draw():
    cfg = ExposureConfig(policy="learned", reward="counterfactual", hold_steps=3, decisions_per_update=2, seed=1)
    seen = []

    def paired(a, b):
        seen.append((a, b))
        return a - b

    _, records = _run_counterfactual(cfg, 12, paired)
    decisions = {r["decision_step"]: r for r in records if r["event"] == "decision"}
    # credit is measured on steps 0, 3, 6, 9 only, each with its own window's α and α′
    assert [round(a, 9) for a, _ in seen] == [round(decisions[s]["reveal_ratio"], 9) for s in (0, 3, 6, 9)]


@pytest.mark.parametrize(("reward", "policy_lr", "tolerance"),
                         [("counterfactual", 1e-2, 0.12), ("counterfactual", 3e-3, 0.05), ("discounted", 3e-3, 0.08)])
@pytest.mark.parametrize("optimum", [0.7, 0.3])
def test_policy_finds_a_bandit_optimum_at_a_realistic_budget(reward, policy_lr, tolerance, optimum):
    """500 steps (the toy configuration) with H = 1 and B = 16 (toy-atesd.yaml): 500 decisions, 31
    updates. The reward is −(α − optimum)² plus Gaussian noise sized so that its correlation with the
    signal is ρ = 0.2 (the paired difference of two draws for "counterfactual"; G_gt alone, λ_gt = 1,
    for "discounted"). On each of 10 seeds the learned Beta's mean must end on the optimum's side of
    0.5, and its mean over the seeds within `tolerance` of the optimum. The optimum lies on either
    side of the start (mean 0.5), so a controller that does not move, or drifts one way whatever the
    reward says, fails. Measured (means over seeds 0-9, optimum 0.7 / 0.3): counterfactual at
    toy-atesd.yaml's 1e-2 0.79 / 0.20 (it overshoots), at 3e-3 0.71 / 0.28; discounted at 3e-3 0.65 / 0.35."""
    import random
    import statistics

    def signal(a):
        return -(a - optimum) ** 2

    draws = random.Random(0)
    if reward == "counterfactual":
        values = [signal(draws.betavariate(2, 2)) - signal(draws.betavariate(2, 2)) for _ in range(20000)]
    else:
        values = [signal(draws.betavariate(2, 2)) for _ in range(20000)]
    noise_sd = statistics.pstdev(values) * math.sqrt(1 / 0.2**2 - 1)
    means = []
    for seed in range(10):
        noise = random.Random(100 + seed)
        cfg = ExposureConfig(policy="learned", reward=reward, hold_steps=1, lookahead_steps=1, decisions_per_update=16,
                             grounding_weight=1.0, policy_lr=policy_lr, seed=seed)
        if reward == "counterfactual":
            policy, _ = _run_counterfactual(cfg, 500, lambda a, b: signal(a) - signal(b) + noise.gauss(0, noise_sd))
        else:
            policy = make_exposure_policy(cfg, 500)
            for step in range(500):
                ratio = policy.decide(step, [None]).ratios[0]
                policy.observe(step, _signals(step, ratio, grounding=signal(ratio) + noise.gauss(0, noise_sd)))
        a, b = policy.network.shapes(policy.tracker.features(499))
        means.append(a / (a + b))
    side = 1 if optimum > 0.5 else -1
    assert all(side * (m - 0.5) > 0 for m in means), f"a seed ended on the wrong side of 0.5: {means}"
    assert abs(statistics.fmean(means) - optimum) < tolerance, f"mean over seeds {statistics.fmean(means):.3f}"


def _paper_run(total_steps: int):
    """The controller of configs/toy-atesd-paper.yaml on deterministic signals whose grounding score
    is 10·t (each step's g_t tells its step apart); the credit records in closing order."""
    from atesd.config import load_config

    cfg = load_config("configs/toy-atesd-paper.yaml").exposure
    policy = make_exposure_policy(cfg, total_steps)
    records = []
    for step in range(total_steps):
        ratio = policy.ratio_for_step(step)
        records += policy.observe(step, _signals(step, ratio, grounding=10.0 * step))
    return cfg, policy, records


def test_paper_controller_averages_g_over_the_steps_after_the_decision():
    cfg, _, records = _paper_run(60)
    credits = [r for r in records if r["event"] == "credit"]
    assert cfg.lookahead_steps == 8 and len(credits) >= 8
    for record in credits:  # G_gt = Σ γ^{i−1} g_{t0+i} / Σ γ^{i−1}, i = 1 … L (not g_{t0} … g_{t0+L−1})
        t0 = record["decision_step"]
        scores = [10.0 * (t0 + i) for i in range(1, cfg.lookahead_steps + 1)]
        assert record["grounding_return"] == pytest.approx(grounding_return(scores, cfg.discount))
        assert record["closed_step"] == t0 + cfg.lookahead_steps


def test_paper_controller_weighs_g_gt_after_scaling_each_part_by_its_running_std():
    cfg, _, records = _paper_run(60)
    credits = [r for r in records if r["event"] == "credit"]
    assert cfg.grounding_weight == 0.1
    progress, grounding = [], []
    for record in credits:  # R = G_lp / std(G_lp so far) + λ_gt · G_gt / std(G_gt so far)
        progress.append(record["progress_return"])
        grounding.append(record["grounding_return"])
        scaled = [values[-1] / statistics.pstdev(values) if len(values) > 1 else 0.0 for values in (progress, grounding)]
        expected = scaled[0] + cfg.grounding_weight * scaled[1]
        assert record["reward"] == pytest.approx(expected)
        assert record["reward"] != pytest.approx(progress[-1] + cfg.grounding_weight * grounding[-1])  # unscaled


def test_paper_controller_sees_the_papers_six_state_features():
    cfg, policy, records = _paper_run(8)
    paper = ("progress", "ratio_ema", "distill_loss_ema", "divergence_mean_ema", "probe_nll_ema", "self_confidence")
    assert tuple(cfg.state_features) == paper and policy.network.layers[0].in_features == 6
    decisions = [r for r in records if r["event"] == "decision"]
    assert decisions and all(tuple(d["state"]) == paper for d in decisions)


def test_state_features_must_be_known_names_in_order():
    with pytest.raises(ValueError, match="state_features"):
        ExposureConfig(policy="learned", state_features=["self_confidence", "progress"])
    with pytest.raises(ValueError, match="state_features"):
        ExposureConfig(policy="learned", state_features=["progress", "loss"])
