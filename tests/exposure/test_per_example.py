"""Per-example exposure: one α per rollout from a contextual Beta policy, learned from paired credit."""

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

SIGNALS = TrainingSignals(distill_loss=1.0, divergence_mean=0.1, top1_disagreement=0.05, probe_nll=1.2,
                          self_confidence=-0.5, grounding_score=None)


def _contexts(rng, n=16):
    return [ExampleContext(difficulty=rng.randint(1, 5), correct=rng.random() < 0.4,
                           self_confidence=-rng.random(), length_fraction=rng.random()) for _ in range(n)]


def _drive(policy, steps, credit_of, seed=0):
    rng = random.Random(seed)
    records = []
    for step in range(steps):
        contexts = _contexts(rng)
        choice = policy.decide(step, contexts)
        credit = StepCredit(tuple(range(8)), tuple(credit_of(contexts[i], choice.ratios[i]) for i in range(8)),
                            tuple(credit_of(contexts[i], choice.counterfactual[i]) for i in range(8)))
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


def test_resume_equals_the_uninterrupted_run():
    import io

    cfg = ExposureConfig(policy="learned", granularity="per_example", reward="counterfactual", seed=3)

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


def test_missing_credit_is_an_error():
    cfg = ExposureConfig(policy="learned", granularity="per_example", reward="counterfactual")
    policy = make_exposure_policy(cfg, 4)
    policy.decide(0, _contexts(random.Random(0)))
    with pytest.raises(ValueError, match="paired credit"):
        policy.observe(0, SIGNALS, None)
