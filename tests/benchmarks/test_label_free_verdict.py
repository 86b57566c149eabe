"""benchmarks/label_free_verdict.py applies the confirmatory plan's criteria (docs/toy-world.md 14.2) as written:
each of (A), (B), (C) can fail the test, a void (C) does not, a world short of the planned seeds makes the
verdict incomplete, and the CLI reads real contrasts.json files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from label_free_verdict import find, verdict, world_criteria  # noqa: E402

SEEDS = ("9", "10", "11", "12", "13", "14")


def row(mean, se, seeds=SEEDS):
    return {"seed_mean": mean, "seed_se": se, "pooled_se": 0.3, "by_seed": {s: mean for s in seeds}}


def outcome(*worlds):
    return verdict({f"w{i}": world_criteria(row(*learned), row(oracle, 0.1)) for i, (learned, oracle) in enumerate(worlds)})


def test_passes_when_one_world_clears_two_seed_se_and_the_oracle_share_and_the_other_is_not_below_opsd():
    result = outcome(((0.8, 0.2), 1.0), ((0.0, 0.3), 0.5))
    assert result["outcome"] == "pass" and result["carried_by"] == "w0"


def test_each_criterion_fails_the_test_on_its_own():
    assert outcome(((0.8, 0.4), 1.0), ((0.0, 0.3), 0.5))["outcome"] == "fail"     # (A): 0.8 is not above 2 × 0.4
    assert outcome(((0.8, 0.2), 1.0), ((-0.1, 0.3), 0.5))["outcome"] == "fail"    # (B): the other world below OPSD
    assert outcome(((0.5, 0.2), 1.0), ((0.0, 0.3), 0.5))["outcome"] == "fail"     # (C): 50 % of the oracle's gain


def test_a_void_share_criterion_does_not_fail_the_test_and_is_recorded_as_void():
    result = outcome(((0.5, 0.2), -0.3), ((0.1, 0.3), 0.5))
    assert result["outcome"] == "pass" and result["worlds"]["w0"]["C"] is None


def test_a_world_short_of_the_planned_seeds_makes_the_verdict_incomplete():
    short = world_criteria(row(0.8, 0.2, SEEDS[:5]), row(1.0, 0.1))
    assert short["status"] == "incomplete" and short["seeds_in"] == list(SEEDS[:5])
    assert verdict({"a": short, "b": world_criteria(row(0.8, 0.2), row(1.0, 0.1))})["outcome"] == "incomplete"


def test_a_missing_contrast_is_named_with_its_file():
    with pytest.raises(ValueError, match="c.json: no contrast x - opsd"):
        find({"contrasts": []}, "x", "opsd", "c.json")


ORACLE_CONTRASTS = REPO / "docs" / "figures" / "bench-label-free-oracles" / "contrasts.json"


def run_verdict(tmp_path, *args) -> tuple[dict, str]:
    """The CLI on real contrasts.json files: its verdict.json and its printed lines."""
    out = tmp_path / "verdict.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "label_free_verdict.py"), *args, "--out", str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(out.read_text()), proc.stdout


def test_cli_on_the_committed_oracle_contrasts(tmp_path):
    result, stdout = run_verdict(tmp_path, f"toy1m={ORACLE_CONTRASTS}", "--learned", "by-confidence", "--oracle",
                                 "by-divergence", "--seeds", "0,1,2", "--planned-worlds", "toy1m")
    world = result["worlds"]["toy1m"]
    assert round(world["learned_minus_opsd"], 2) == 0.91 and round(world["oracle_minus_opsd"], 2) == 1.08
    assert world["A"] and world["C"] and "outcome: pass" in stdout


def test_cli_leaves_the_verdict_incomplete_while_a_planned_world_is_missing(tmp_path):
    result, _ = run_verdict(tmp_path, f"toy1m={ORACLE_CONTRASTS}", "--learned", "by-confidence", "--oracle",
                            "by-divergence", "--seeds", "0,1,2")
    assert result["outcome"] == "incomplete" and result["worlds"]["t2"]["status"] == "incomplete"
    assert result["worlds"]["toy1m"]["A"]


def test_the_committed_test_recomputes_from_both_worlds_bench_json_and_fails_as_the_docs_say(tmp_path):
    worlds = {}
    for tag in ("toy1m", "t2"):
        bench = REPO / "docs" / "figures" / "bench-label-free" / tag / "bench.json"
        worlds[tag] = tmp_path / f"{tag}-contrasts.json"
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "contrasts.py"), str(bench),
                        "atesd-per-feature-divergence:opsd", "by-divergence:opsd", "--out", str(worlds[tag])],
                       capture_output=True, text=True, check=True)
    result, stdout = run_verdict(tmp_path, *(f"{tag}={path}" for tag, path in worlds.items()))
    toy1m, t2 = result["worlds"]["toy1m"], result["worlds"]["t2"]
    assert toy1m["status"] == t2["status"] == "complete"
    assert round(toy1m["learned_minus_opsd"], 2) == 1.03 and round(toy1m["seed_se"], 2) == 0.24
    assert round(toy1m["oracle_minus_opsd"], 2) == 1.01 and toy1m["A"] and toy1m["C"]
    assert round(t2["learned_minus_opsd"], 2) == -0.33 and round(t2["seed_se"], 2) == 0.31
    assert round(t2["oracle_minus_opsd"], 2) == 0.54 and not t2["A"] and not t2["B"]
    assert result["outcome"] == "fail" and "outcome: fail" in stdout
    half, _ = run_verdict(tmp_path, f"toy1m={worlds['toy1m']}")
    assert half["worlds"]["toy1m"]["A"] and half["outcome"] == "incomplete"
    committed = json.loads((REPO / "docs" / "figures" / "bench-label-free" / "verdict.json").read_text())
    assert committed["outcome"] == "fail"
