"""Per-example exposure: one α per rollout from a contextual Beta policy, or from its difficulty level's
Beta (granularity="per_difficulty") or its feature bin's (granularity="per_feature"), learned from paired
credit."""

from __future__ import annotations

import random

import pytest
import torch

from atesd.exposure import (
    ExampleContext,
    ExposureConfig,
    PerExampleExposure,
    StepCredit,
    TrainingSignals,
    make_exposure_policy,
)
from atesd.exposure.per_example import difficulty_one_hot

SIGNALS = TrainingSignals(distill_loss=1.0, divergence_mean=0.1, top1_disagreement=0.05, probe_nll=1.2,
                          self_confidence=-0.5, grounding_score=None)


def _contexts(rng, n=16):
    return [ExampleContext(difficulty=rng.randint(1, 5), correct=rng.random() < 0.4,
                           self_confidence=-rng.random(), length_fraction=rng.random(),
                           problem_id=str(rng.randint(0, 5))) for _ in range(n)]


def _drive(policy, steps, credit_of, seed=0, examples=16, credited=8):
    rng = random.Random(seed)
    records = []
    for step in range(steps):
        contexts = _contexts(rng, examples)
        choice = policy.decide(step, contexts)
        credit = StepCredit(tuple(range(credited)),
                            tuple(credit_of(contexts[i], choice.ratios[i]) for i in range(credited)),
                            tuple(credit_of(contexts[i], choice.counterfactual[i]) for i in range(credited)))
        records += policy.observe(step, SIGNALS, credit)
    return records


def test_per_example_policy_is_built_from_the_config_and_draws_one_ratio_per_example():
    cfg = ExposureConfig(policy="learned", granularity="per_example", reward="counterfactual")
    policy = make_exposure_policy(cfg, 10)
    assert isinstance(policy, PerExampleExposure) and policy.needs_credit and policy.wants_credit(3)
    contexts = _contexts(random.Random(0))
    choice = policy.decide(0, contexts)
    assert len(choice.ratios) == len(choice.counterfactual) == 16
    assert len(set(choice.ratios)) > 8 and all(0.05 <= r <= 1.0 for r in choice.ratios)
    assert policy.decide(0, contexts) == choice  # a repeated call returns the same choice


def test_per_example_policy_learns_a_different_ratio_for_right_and_wrong_rollouts():
    """Credit peaks at α = 0.9 for rollouts that were right and at 0.3 for wrong ones (the shape the
    first-order credit has on the toy world, docs/toy-world.md), with noise of the signal's size."""
    def credit_of(context, ratio):
        best = 0.9 if context.correct else 0.3
        return -(ratio - best) ** 2 + noise.gauss(0, 0.05)

    noise = random.Random(7)
    cfg = ExposureConfig(policy="learned", granularity="per_example", reward="counterfactual", policy_lr=3e-3,
                         seed=2)
    policy = make_exposure_policy(cfg, 500)
    records = _drive(policy, 500, credit_of)
    assert policy.updates == 500
    shared = policy.tracker.features(499)
    means = {}
    for correct in (True, False):
        state = shared + [0.6, 1.0, float(correct), -0.1, 0.3]
        a, b = policy.network.shapes(state)
        means[correct] = a / (a + b)
    assert means[True] > 0.75 and means[False] < 0.45, means
    last = [r for r in records if r["event"] == "decision"][-1]
    assert len(last["reveal_ratios"]) == 16 and set(last["reveal_ratio_by_difficulty"]) <= {"1", "2", "3", "4", "5"}


def test_per_difficulty_state_is_a_one_hot_of_the_level_and_every_level_starts_at_beta_2_2():
    cfg = ExposureConfig(policy="learned", granularity="per_difficulty", reward="counterfactual")
    policy = make_exposure_policy(cfg, 10)
    assert isinstance(policy, PerExampleExposure) and policy.needs_credit
    level = lambda d: ExampleContext(difficulty=d, correct=True, self_confidence=-0.2, length_fraction=0.5)
    assert difficulty_one_hot(level(None), 5) == [1, 0, 0, 0, 0, 0]  # unlabelled: row 0
    assert difficulty_one_hot(level(3), 5) == [0, 0, 0, 1, 0, 0]
    assert difficulty_one_hot(level(9), 5) == difficulty_one_hot(level(5), 5)  # above the last: the last
    a, b = policy.network(torch.eye(6))
    assert torch.allclose(a, torch.full((6,), 2.0)) and torch.allclose(b, torch.full((6,), 2.0))
    choice = policy.decide(0, _contexts(random.Random(0)))
    assert len(choice.ratios) == len(choice.counterfactual) == 16


@pytest.mark.parametrize("granularity", ["per_example", "per_difficulty"])
def test_learned_policies_start_at_the_configured_beta(granularity):
    cfg = ExposureConfig(policy="learned", granularity=granularity, reward="counterfactual", initial_beta_a=6.0,
                         initial_beta_b=1.2)
    policy = make_exposure_policy(cfg, 10)
    policy.decide(0, _contexts(random.Random(0)))
    a, b = policy.network(torch.tensor(policy._step["states"], dtype=torch.float32))
    assert torch.allclose(a, torch.full_like(a, 6.0), atol=0.1) and torch.allclose(b, torch.full_like(b, 1.2), atol=0.1)


def test_per_difficulty_policy_separates_levels_at_the_toy_budget():
    """The toy configuration's budget (500 steps, 32 credited rollouts each, policy_lr 3e-2) with the
    per-level credit slopes measured on the toy world at OPSD step 250 (64-problem probe: levels 1–3
    prefer more exposure, 4–5 less, level 5 most clearly; docs/toy-world.md section 8.4), in units of
    the paired difference's noise: every level's Beta moves to the right side of 0.5 on every seed."""
    slopes = {1: 0.15, 2: 0.2, 3: 0.45, 4: -0.35, 5: -1.5}
    for seed in range(3):
        noise = random.Random(100 + seed)
        cfg = ExposureConfig(policy="learned", granularity="per_difficulty", reward="counterfactual",
                             policy_lr=3e-2, credit_examples=32, seed=seed)
        policy = make_exposure_policy(cfg, 500)
        _drive(policy, 500, lambda c, r: slopes[c.difficulty] * r + noise.gauss(0, 0.5 ** 0.5), seed=seed,
               examples=32, credited=32)
        a, b = policy.network(torch.eye(6))
        mean = (a / (a + b)).tolist()
        # all five levels, each on its slope's side of the start and ordered as the slopes are (seeds 0-5
        # measured: levels 1-2 0.65-0.74, level 3 0.81-0.84, level 4 0.17-0.25, level 5 0.12-0.13)
        assert mean[1] > 0.6 and mean[2] > 0.6 and mean[3] > 0.75 and mean[4] < 0.3 and mean[5] < 0.15, (seed, mean)
        assert mean[3] > max(mean[1], mean[2]) and mean[5] < mean[4], (seed, mean)
        assert mean[0] == pytest.approx(0.5)  # no unlabelled example: row 0 never moved


def test_per_feature_table_learns_each_bins_side_and_leaves_the_unknown_row():
    """feature=correct, one edge at 0.5: row 0 (wrong rollouts) gets credit that falls with α, row 1 (right
    ones) credit that rises; the rows part to their sides on every seed, the unknown row (2) never moves."""
    for seed in range(3):
        noise = random.Random(200 + seed)
        cfg = ExposureConfig(policy="learned", granularity="per_feature", reward="counterfactual", feature="correct",
                             feature_thresholds=[0.5], policy_lr=3e-2, credit_examples=32, seed=seed)
        policy = make_exposure_policy(cfg, 300)
        assert isinstance(policy, PerExampleExposure) and not policy.needs_full_divergence
        records = _drive(policy, 300, lambda c, r: (0.5 if c.correct else -0.5) * r + noise.gauss(0, 0.7),
                         seed=seed, examples=32, credited=32)
        a, b = policy.network(torch.eye(3))
        mean = (a / (a + b)).tolist()
        assert mean[0] < 0.35 and mean[1] > 0.65, (seed, mean)
        assert mean[2] == pytest.approx(0.5)
        last = [r for r in records if r["event"] == "decision"][-1]
        assert last["feature"] == "correct" and set(last["reveal_ratio_by_bin"]) <= {"0", "1"}
        assert last["bins"] == [int(c.correct) for c in policy._step["contexts"]]


def test_per_feature_unknown_feature_takes_the_extra_row():
    cfg = ExposureConfig(policy="learned", granularity="per_feature", reward="counterfactual", feature="divergence",
                         feature_binning="batch_quantile", feature_thresholds=[0.6])
    policy = make_exposure_policy(cfg, 4)
    assert policy.needs_full_divergence
    contexts = [ExampleContext(difficulty=None, correct=False, self_confidence=-0.1, length_fraction=0.2,
                               full_exposure_divergence=value) for value in (0.3, None, 0.1, 0.9, 0.5)]
    policy.decide(0, contexts)
    assert policy._step["bins"] == [0, None, 0, 1, 1]
    assert [row.index(1.0) for row in policy._step["states"]] == [0, 2, 0, 1, 1]


@pytest.mark.parametrize("granularity", ["per_example", "per_difficulty", "per_feature"])
def test_resume_equals_the_uninterrupted_run(granularity):
    import io

    cfg = ExposureConfig(policy="learned", granularity=granularity, reward="counterfactual", seed=3,
                         feature="pass_rate", feature_thresholds=[0.25, 0.75])

    def credit_of(context, ratio):
        return ratio if context.correct else -ratio

    full = make_exposure_policy(cfg, 12)
    whole = _drive(full, 12, credit_of)
    first = make_exposure_policy(cfg, 12)
    rng = random.Random(0)
    part = []
    for step in range(5):
        contexts = _contexts(rng)
        choice = first.decide(step, contexts)
        credit = StepCredit(tuple(range(8)), tuple(credit_of(contexts[i], choice.ratios[i]) for i in range(8)),
                            tuple(credit_of(contexts[i], choice.counterfactual[i]) for i in range(8)))
        part += first.observe(step, SIGNALS, credit)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = make_exposure_policy(cfg, 12)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(5, 12):
        contexts = _contexts(rng)
        choice = second.decide(step, contexts)
        credit = StepCredit(tuple(range(8)), tuple(credit_of(contexts[i], choice.ratios[i]) for i in range(8)),
                            tuple(credit_of(contexts[i], choice.counterfactual[i]) for i in range(8)))
        part += second.observe(step, SIGNALS, credit)
    assert part == whole
    if granularity == "per_feature":  # the pass-rate counts came back with the checkpoint
        assert second.binner.outcomes == full.binner.outcomes and sum(c[1] for c in full.binner.outcomes.values()) == 192
    other = make_exposure_policy(ExposureConfig(policy="learned", reward="counterfactual", seed=3, granularity=(
        "per_example" if granularity != "per_example" else "per_difficulty")), 12)
    with pytest.raises(ValueError, match="another exposure policy"):
        other.load_state_dict(full.state_dict())


def test_missing_credit_is_an_error():
    cfg = ExposureConfig(policy="learned", granularity="per_example", reward="counterfactual")
    policy = make_exposure_policy(cfg, 4)
    policy.decide(0, _contexts(random.Random(0)))
    with pytest.raises(ValueError, match="paired credit"):
        policy.observe(0, SIGNALS, None)
