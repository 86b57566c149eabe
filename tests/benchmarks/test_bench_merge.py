"""benchmarks/bench_merge.py: a bench split by seed and merged again reports what the whole bench
reports; benches under another budget, or holding the same run twice, are refused by file name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_merge import main, merge  # noqa: E402

from atesd.experiments.bench_report import by_method, markdown  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "figures" / "bench-toy" / "bench.json"
KEEP = ["base", "opsd", "random", "atesd-per-difficulty"]


def _split(tmp_path: Path) -> tuple[dict, Path, Path]:
    bench = json.loads(SHIPPED.read_text())
    bench["results"] = [r for r in bench["results"] if r["method"] in KEEP]
    parts = []
    for name, seeds in (("a", {0}), ("b", {1, 2})):
        part = {**bench, "results": [r for r in bench["results"] if r["seed"] in seeds]}
        parts.append(tmp_path / name / "bench.json")
        parts[-1].parent.mkdir()
        parts[-1].write_text(json.dumps(part))
    return bench, *parts


def _tables(text: str) -> str:
    return text[text.index("### Test Average@"):]  # the header names the command, which differs


def test_merging_a_bench_split_by_seed_gives_the_whole_bench_report(tmp_path):
    bench, a, b = _split(tmp_path)
    results, meta = merge([a, b])
    assert meta["seeds"] == [0, 1, 2] and meta["methods"] == KEEP and meta["sources"] == [str(a), str(b)]
    whole = markdown(by_method(bench["results"], KEEP), bench, plots=())
    assert _tables(markdown(by_method(results, meta["methods"]), meta, plots=())) == _tables(whole)
    kept, _ = merge([a, b], methods=["opsd", "atesd-per-difficulty"])
    assert {r["method"] for r in kept} == {"opsd", "atesd-per-difficulty"} and len(kept) == 6


def test_merge_writes_the_report_into_out(tmp_path):
    _, a, b = _split(tmp_path)
    main([str(a), str(b), "--methods", "opsd", "atesd-per-difficulty", "--out", str(tmp_path / "pooled")])
    pooled = json.loads((tmp_path / "pooled" / "bench.json").read_text())
    assert len(pooled["results"]) == 6 and "bench_merge.py" in pooled["command"]
    assert (tmp_path / "pooled" / "BENCHMARKS-toy.md").is_file()


def test_merge_keeps_a_run_found_twice_with_equal_results_once(tmp_path):
    _, a, b = _split(tmp_path)  # the base row evaluated in both folders, as side-by-side benches do
    base = [r for r in json.loads(a.read_text())["results"] if r["method"] == "base"]
    b.write_text(json.dumps({**json.loads(b.read_text()), "results": json.loads(b.read_text())["results"] + base}))
    results, _ = merge([a, b])
    assert [r["seed"] for r in results if r["method"] == "base"] == [0, 1, 2]


def test_merge_refuses_the_same_run_twice_with_other_results_and_another_budget_naming_the_file(tmp_path):
    _, a, b = _split(tmp_path)
    with pytest.raises(SystemExit, match=rf"{b}: base seed 0 is also in {a}, with other results"):
        other = json.loads(a.read_text())["results"]
        other[0] = {**other[0], "test": {**other[0]["test"], "per_problem_accuracy": {}}}
        b.write_text(json.dumps({**json.loads(b.read_text()), "results": other}))
        merge([a, b])
    changed = json.loads(a.read_text())
    changed["budget"] = {**changed["budget"], "steps": 48}
    b.write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match=rf"{b}: its budget differs"):
        merge([a, b])
