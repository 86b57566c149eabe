"""The bench's statistics on hand-made results (no training): paired differences pool (seed, problem)
pairs and use the chosen reference, per level and with the seed as the unit; identical variants."""

from __future__ import annotations

import pytest

from atesd.experiments.bench_stats import paired_vs_reference

def _run(method: str, seed: int, per_problem: dict[str, float]) -> dict:
    return {"method": method, "seed": seed, "test": {"per_problem_accuracy": per_problem}}


def test_paired_difference_against_base_pools_seed_problem_pairs():
    groups = {
        "base": [_run("base", 0, {"a": 0.5, "b": 0.0}), _run("base", 1, {"a": 0.5, "b": 0.5})],
        "opsd": [_run("opsd", 0, {"a": 0.0, "b": 0.0}), _run("opsd", 1, {"a": 0.5, "b": 0.0})],
        "sft": [_run("sft", 0, {"a": 1.0, "b": 0.5}), _run("sft", 1, {"a": 1.0, "b": 1.0})],
    }
    mean, se, pairs = paired_vs_reference(groups, "sft", "base")
    assert pairs == 4 and mean == pytest.approx(0.5) and se == pytest.approx(0.0)
    mean, _, _ = paired_vs_reference(groups, "opsd", "base")
    assert mean == pytest.approx((-0.5 + 0.0 + 0.0 - 0.5) / 4)
    assert paired_vs_reference(groups, "sft")[0] == pytest.approx((1.0 + 0.5 + 0.5 + 1.0) / 4)  # default: OPSD


def test_no_paired_difference_for_the_reference_itself_or_when_it_is_missing():
    groups = {"base": [_run("base", 0, {"a": 0.5})], "sft": [_run("sft", 0, {"a": 1.0})]}
    assert paired_vs_reference(groups, "base", "base") is None
    assert paired_vs_reference(groups, "sft") is None  # no OPSD runs


def test_identical_variants_are_reported_per_seed():
    from atesd.experiments.bench_stats import identical_variants

    def run(method, seed, accuracies):
        return {"method": method, "seed": seed, "test": {"per_problem_accuracy": dict(enumerate(accuracies))}}

    groups = {"atesd": [run("atesd", 0, [0.5, 1.0]), run("atesd", 1, [0.5, 0.0])],
              "atesd-no-gt": [run("atesd-no-gt", 0, [0.5, 1.0]), run("atesd-no-gt", 1, [0.0, 0.0])],
              "opsd": [run("opsd", 0, [1.0, 1.0])]}
    assert identical_variants(groups) == [("atesd", "atesd-no-gt", 0)]


def test_paired_difference_by_difficulty_pools_each_level_separately():
    from atesd.experiments.bench_stats import paired_by_difficulty

    groups = {
        "opsd": [_run("opsd", 0, {"a": 1.0, "b": 0.0, "c": 0.5}), _run("opsd", 1, {"a": 1.0, "b": 0.0, "c": 0.5})],
        "fixed-0.5": [_run("fixed-0.5", 0, {"a": 0.5, "b": 0.5, "c": 1.0}),
                      _run("fixed-0.5", 1, {"a": 0.5, "b": 1.0, "c": 1.0})],
    }
    for runs in groups.values():  # the last step's results are the default
        for run in runs:
            run["test_last_step"] = run["test"]
    cells = paired_by_difficulty(groups, "fixed-0.5", {"a": 1, "b": 5, "c": 5})
    assert cells[1][0] == pytest.approx(-0.5) and cells[1][2] == 2
    assert cells[5][0] == pytest.approx((0.5 + 1.0 + 0.5 + 0.5) / 4) and cells[5][2] == 4
    assert paired_by_difficulty(groups, "opsd", {"a": 1}) == {}


def test_seed_as_unit_takes_one_difference_per_seed_and_the_se_over_seeds():
    from atesd.experiments.bench_stats import over_seeds, per_seed_differences

    groups = {
        "opsd": [_run("opsd", s, {"a": 0.5, "b": 0.5}) for s in (0, 1, 2)],
        "atesd": [_run("atesd", 0, {"a": 1.0, "b": 0.5}), _run("atesd", 1, {"a": 0.5, "b": 0.5}),
                  _run("atesd", 2, {"a": 1.0, "b": 1.0}), _run("atesd", 3, {"a": 0.0, "b": 0.0})],
    }
    for runs in groups.values():
        for run in runs:
            run["test_last_step"] = run["test"]
    differences = per_seed_differences(groups, "atesd")
    assert differences == pytest.approx({0: 0.25, 1: 0.0, 2: 0.5})  # seed 3 has no OPSD run to pair with
    mean, se, seeds = over_seeds(differences)
    assert seeds == 3 and mean == pytest.approx(0.25) and se == pytest.approx(0.25 / 3 ** 0.5)
    assert over_seeds({0: 0.1})[1] is None
    assert per_seed_differences(groups, "opsd") == {}
