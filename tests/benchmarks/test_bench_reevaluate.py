"""benchmarks/bench_reevaluate.py: re-evaluating a bench's saved models under its own protocol gives
the bench's figures back problem by problem; under another protocol it writes a bench the report
pairs, keeps the replaced figures, resumes without re-evaluating, and names a missing model."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_reevaluate  # noqa: E402

from atesd.data import write_problems  # noqa: E402
from atesd.experiments.bench import QUICK_BUDGET, run_bench  # noqa: E402
from atesd.toy.task import toy_problems  # noqa: E402

QUICK = QUICK_BUDGET.test
MORE_SAMPLES = replace(QUICK, name="quick-k4", k=4, n_problems=5)  # more samples, fewer problems


@pytest.fixture(scope="module")
def bench(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("reeval-data")
    write_problems(data / "train.jsonl", toy_problems(64, seed=0, split="train"))
    write_problems(data / "val.jsonl", toy_problems(10, seed=0, split="val"))
    write_problems(data / "test.jsonl", toy_problems(10, seed=0, split="test"))
    out = tmp_path_factory.mktemp("reeval-bench") / "bench"
    run_bench(quick=True, out=out, methods=["base", "opsd"], model_dir=tiny_model_dir, data_dir=data)
    return out


@pytest.fixture(autouse=True)
def quick_protocols(monkeypatch):
    """The quick bench's own protocol and one with more samples, as named protocols."""
    monkeypatch.setattr(bench_reevaluate, "PROTOCOLS", {p.name: p for p in (QUICK, MORE_SAMPLES)})


def _results(folder: Path) -> dict[tuple[str, int], dict]:
    return {(r["method"], r["seed"]): r for r in json.loads((folder / "bench.json").read_text())["results"]}


def test_reevaluating_under_the_bench_protocol_reproduces_every_problem(bench, tmp_path):
    bench_reevaluate.main([str(bench), "--protocol", QUICK.name, "--out", str(tmp_path / "same")])
    before, after = _results(bench), _results(tmp_path / "same")
    assert before.keys() == after.keys()
    for run, result in before.items():
        for key in ("test", "test_last_step"):
            if result.get(key):
                assert after[run][key]["per_problem_accuracy"] == result[key]["per_problem_accuracy"], (run, key)


def test_another_protocol_becomes_the_budget_test_and_the_replaced_figures_are_kept(bench, tmp_path):
    out = tmp_path / "k4"
    bench_reevaluate.main([str(bench), "--protocol", MORE_SAMPLES.name, "--out", str(out), "--methods", "opsd"])
    written = json.loads((out / "bench.json").read_text())
    assert written["budget"]["test"] == MORE_SAMPLES.to_dict() and written["methods"] == ["opsd"]
    assert "bench_reevaluate.py" in written["command"] and (out / "BENCHMARKS-toy.md").is_file()
    assert len(written["test_difficulty"]) == 5  # the levels of the new protocol's problems, not the bench's 8
    old = _results(bench)
    for (method, seed), result in _results(out).items():
        assert result["test"]["k"] == 4 and result["test"]["meta"]["protocol"]["name"] == "quick-k4"
        assert len(result["test"]["per_problem_accuracy"]) == 5
        assert result["replaced_tests"]["test"]["average_at_k"] == old[method, seed]["test"]["average_at_k"]
        assert result["val_curve"] == old[method, seed]["val_curve"]  # training records are the bench's
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/*/result.json")}
    bench_reevaluate.main([str(bench), "--protocol", MORE_SAMPLES.name, "--out", str(out), "--methods", "opsd"])
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/result.json")} == stamp  # resumed: nothing redone


def test_a_missing_model_is_named(bench, tmp_path):
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    run = next(copy.glob("*/opsd"))
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "best", ignore_errors=True)
    with pytest.raises(SystemExit, match=rf"{run / 'result.json'}: its test\S* model .* is missing"):
        bench_reevaluate.main([str(copy), "--protocol", QUICK.name, "--out", str(tmp_path / "out"),
                               "--methods", "opsd"])
