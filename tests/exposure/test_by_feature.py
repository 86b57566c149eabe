"""policy="by_feature": the α each example gets from its label-free feature's bin, the batch-quantile
map, the running pass rate and its exact resumption, and the config's checks of the bins."""

import io

import pytest
import torch

from atesd.exposure import ExampleContext, ExposureConfig, TrainingSignals, make_exposure_policy
from atesd.exposure.by_feature import ByFeatureExposure, mid_rank_fractions

SIGNALS = TrainingSignals(distill_loss=1.0, divergence_mean=0.5, top1_disagreement=0.2, probe_nll=None,
                          self_confidence=-0.5, grounding_score=None)


def context(correct=True, confidence=-0.5, problem_id=None, divergence=None):
    return ExampleContext(None, correct, confidence, 0.5, problem_id, divergence)


def policy_of(**fields):
    policy = make_exposure_policy(ExposureConfig(policy="by_feature", **fields), total_steps=10)
    assert isinstance(policy, ByFeatureExposure)
    return policy


def test_correct_rollouts_get_the_second_bins_ratio_and_wrong_ones_the_first():
    policy = policy_of(feature="correct", feature_thresholds=[0.5], feature_ratios=[0.5, 1.0])
    choice = policy.decide(0, [context(True), context(False), context(False), context(True)])
    assert choice.ratios == [1.0, 0.5, 0.5, 1.0]
    assert choice.mean == 0.75


def test_confidence_thresholds_put_each_value_in_the_bin_of_the_edges_at_or_below_it():
    policy = policy_of(feature="confidence", feature_thresholds=[-1.0, -0.2], feature_ratios=[0.25, 0.5, 1.0])
    choice = policy.decide(0, [context(confidence=c) for c in (-3.0, -1.0, -0.5, -0.2, -0.01)])
    assert choice.ratios == [0.25, 0.5, 0.5, 1.0, 1.0]


def test_batch_quantile_gives_the_least_confident_share_of_the_batch_the_first_bin():
    # 10 rollouts, edge 0.4: the 4 least confident (mid-rank fractions 0.05 … 0.35) get 0.5
    policy = policy_of(feature="confidence", feature_binning="batch_quantile", feature_thresholds=[0.4],
                       feature_ratios=[0.5, 1.0])
    confidences = [-0.1 * i for i in (3, 9, 1, 7, 5, 2, 8, 4, 6, 10)]
    ratios = policy.decide(0, [context(confidence=c) for c in confidences]).ratios
    assert [c for c, r in zip(confidences, ratios) if r == 0.5] == pytest.approx([-0.9, -0.7, -0.8, -1.0])


def test_mid_rank_fractions_split_ties_evenly():
    assert mid_rank_fractions([2.0, 1.0, 2.0, 3.0]) == [0.5, 0.125, 0.5, 0.875]


def test_divergence_bins_the_measured_value_and_an_unmeasured_example_gets_reveal_ratio():
    policy = policy_of(feature="divergence", feature_thresholds=[0.1], feature_ratios=[1.0, 0.5], reveal_ratio=0.75)
    assert policy.needs_full_divergence
    assert policy.decide(0, [context(divergence=d) for d in (0.01, 0.3, None)]).ratios == [1.0, 0.5, 0.75]


def test_pass_rate_counts_the_problems_rollouts_over_visits_and_its_group():
    policy = policy_of(feature="pass_rate", feature_thresholds=[0.5], feature_ratios=[0.5, 1.0], reveal_ratio=0.25)
    # step 0: problem a's group of two (one right: rate 1/2 → bin 1), problem b wrong (0 → bin 0), no id
    first = policy.decide(0, [context(True, problem_id="a"), context(False, problem_id="a"),
                              context(False, problem_id="b"), context(True)])
    assert first.ratios == [1.0, 1.0, 0.5, 0.25]
    records = policy.observe(0, SIGNALS)
    assignment = [r for r in records if r["event"] == "assignment"][0]
    assert assignment["bin_shares"] == [0.25, 0.5] and assignment["unknown_share"] == 0.25
    # a repeated call for the same step counts nothing twice
    policy.decide(1, [context(False, problem_id="a")])
    assert policy.decide(1, [context(False, problem_id="a")]).ratios == [0.5]  # a: 1 right of 3
    assert policy.binner.outcomes == {"a": [1, 3], "b": [0, 1]}


def test_pass_rate_counts_survive_a_checkpoint_round_trip():
    cfg = dict(feature="pass_rate", feature_thresholds=[0.5], feature_ratios=[0.5, 1.0])
    first = policy_of(**cfg)
    first.decide(0, [context(True, problem_id="a")])
    first.observe(0, SIGNALS)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = policy_of(**cfg)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    # a: right once before; now wrong → 1/2 → bin 1 in both
    assert second.decide(1, [context(False, problem_id="a")]).ratios == first.decide(
        1, [context(False, problem_id="a")]).ratios == [1.0]


@pytest.mark.parametrize("fields, message", [
    (dict(feature_thresholds=[0.5, 0.2], feature_ratios=[1, 1, 1]), "ascending"),
    (dict(feature_thresholds=[0.5], feature_ratios=[1.0]), "needs 2 ratios"),
    (dict(feature_thresholds=[0.5], feature_ratios=[1.0, 1.5]), "needs 2 ratios"),
    (dict(feature_binning="batch_quantile", feature_thresholds=[-0.5], feature_ratios=[1, 1]), "in \\(0, 1\\)"),
    (dict(feature="length"), "exposure.feature must be one of"),
])
def test_bad_bins_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValueError, match=message):
        ExposureConfig(policy="by_feature", **fields)


def test_random_feature_bins_a_share_of_the_rollouts_by_chance_and_resumes_the_same_draws():
    cfg = ExposureConfig(policy="by_feature", feature="random", feature_thresholds=[0.4], feature_ratios=[0.5, 1.0],
                         seed=3)
    contexts = [ExampleContext(difficulty=None, correct=i % 2 == 0, self_confidence=-0.1, length_fraction=0.2)
                for i in range(200)]
    policy = make_exposure_policy(cfg, 10)
    first = policy.decide(0, contexts).ratios
    assert 0.3 < first.count(0.5) / 200 < 0.5  # about 40 % at α = 0.5, whatever the rollouts
    policy.observe(0, SIGNALS)
    assert policy.decide(1, contexts).ratios != first  # new draws every step
    policy.observe(1, SIGNALS)
    resumed = make_exposure_policy(cfg, 10)
    resumed.load_state_dict(policy.state_dict())
    assert resumed.decide(2, contexts).ratios == policy.decide(2, contexts).ratios
    assert make_exposure_policy(cfg, 10).decide(0, contexts).ratios == first  # the same seed draws the same
