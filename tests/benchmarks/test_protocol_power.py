"""benchmarks/protocol_power.py: the variance split recovers a known per-problem part and sampling
part, and the script writes both evaluations and the predicted SEs for two real models."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from protocol_power import main, variance_parts  # noqa: E402

from atesd.data import write_problems  # noqa: E402


def test_variance_parts_recover_t_and_s_from_two_sample_sizes():
    t, s = 0.01, 0.08  # Var(d_k) = t + s / k: ±√(t + s/k) around 0 has exactly that population variance
    few = [sign * (t + s / 8) ** 0.5 for sign in (1, -1)]
    many = [sign * (t + s / 64) ** 0.5 for sign in (1, -1)]
    assert variance_parts(few, many, 8, 64) == pytest.approx((t, s))


def test_script_writes_both_evaluations_and_the_predictions(tiny_model_dir, toy_problems, tmp_path):
    write_problems(tmp_path / "test.jsonl", toy_problems[:6])
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    out = tmp_path / "power.json"
    main([str(tiny_model_dir), str(other), "--data-dir", str(tmp_path), "--many", "16", "--out", str(out)])
    record = json.loads(out.read_text())
    assert set(record["by_k"]) == {"8", "16"} and record["problems"] == 6
    for row in record["by_k"].values():  # the same weights under one sampling seed: identical samples
        assert row["mean_difference"] == 0 and row["variance"] == 0
    assert record["per_problem_part_t"] == 0 and "6000 pairs, k=16" in record["predicted_se_points"]
