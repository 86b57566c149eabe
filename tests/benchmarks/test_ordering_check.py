"""benchmarks/ordering_check.py: the papers' five contrasts on a committed bench, each judged with the
pooled pairs and with the seed as the unit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from ordering_check import main, ordering  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "figures" / "bench-toy" / "bench.json"


def test_the_shipped_world_fails_the_sft_and_grpo_contrasts_as_the_issue_measured():
    rows = {r["contrast"]: r for r in ordering(json.loads(SHIPPED.read_text()))}
    assert [round(100 * rows[c]["pooled_mean"], 1) for c in rows] == [2.8, -5.7, -2.4, 5.1, -0.7]
    assert rows["opsd - base"]["met_pooled"] and rows["opsd - base"]["met_seed_unit"]
    assert rows["opsd - sft"]["met_pooled"] is False and rows["grpo - base"]["met_pooled"] is False
    assert rows["random - opsd"]["met_pooled"] and rows["random - opsd"]["seeds"] == 3
    assert rows["grpo - base"]["seed_se"] is None and rows["grpo - base"]["seeds"] == 1  # GRPO ran on seed 0 only


def test_a_missing_method_is_reported_and_the_records_are_written(tmp_path):
    bench = json.loads(SHIPPED.read_text())
    bench["results"] = [r for r in bench["results"] if r["method"] != "sft"]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    main([str(path), "--grpo", "grpo-16x8", "--out", str(tmp_path / "ordering.json")])
    rows = {r["contrast"]: r for r in json.loads((tmp_path / "ordering.json").read_text())["contrasts"]}
    assert rows["opsd - sft"]["missing"] == ["sft"] and rows["grpo-16x8 - base"]["missing"] == ["grpo-16x8"]
    assert rows["random - opsd"]["met_seed_unit"] is True


def test_several_benches_are_pooled_before_the_contrasts(tmp_path):
    bench = json.loads(SHIPPED.read_text())
    keep = [r for r in bench["results"] if r["method"] in ("base", "opsd", "sft", "random")]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({**bench, "results": [r for r in keep if r["method"] != "sft"]}))
    b.write_text(json.dumps({**bench, "results": [r for r in keep if r["method"] in ("sft", "base")]}))
    main([str(a), str(b), "--out", str(tmp_path / "o.json")])
    pooled = {r["contrast"]: r for r in json.loads((tmp_path / "o.json").read_text())["contrasts"]}
    whole = {r["contrast"]: r for r in ordering({"results": keep})}
    assert pooled["opsd - sft"]["pooled_mean"] == whole["opsd - sft"]["pooled_mean"] and pooled["opsd - sft"]["seeds"] == 3
