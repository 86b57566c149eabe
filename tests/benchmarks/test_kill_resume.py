"""benchmarks/kill_resume.py's comparison on hand-made run directories: what counts as the same run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from kill_resume import compare_runs, latest_checkpoint  # noqa: E402


def _run(root: Path, weight: float = 1.0, loss: float = 0.5, step_s: float = 1.0, exposure: str = "a\nb\n") -> Path:
    (root / "final").mkdir(parents=True)
    save_file({"w": torch.full((2, 2), weight), "b": torch.zeros(2)}, str(root / "final" / "model.safetensors"))
    metrics = [{"step": s, "train/loss": loss, "timing/step_s": step_s * (s + 1), "train/tokens_per_s": 9 / step_s}
               for s in range(3)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (root / "exposure.jsonl").write_text(exposure)
    return root


def test_runs_differing_only_in_timing_are_identical(tmp_path):
    assert compare_runs(_run(tmp_path / "a"), _run(tmp_path / "b", step_s=3.0)) == []


def test_every_kind_of_difference_is_reported(tmp_path):
    reference = _run(tmp_path / "a")
    assert compare_runs(reference, _run(tmp_path / "w", weight=1.0 + 1e-7)) == ["weights: w differs"]
    assert compare_runs(reference, _run(tmp_path / "m", loss=0.6)) == [
        f"metrics.jsonl: step {s} differs in train/loss" for s in range(3)]
    assert compare_runs(reference, _run(tmp_path / "e", exposure="a\nc\n")) == [
        "exposure.jsonl: differs from line 2 (2 vs 2 lines)"]
    (tmp_path / "gone").mkdir()
    assert compare_runs(reference, tmp_path / "gone")[0].startswith("weights: missing")


def test_latest_checkpoint_counts_complete_checkpoints_only(tmp_path):
    assert latest_checkpoint(tmp_path) == 0
    for step, complete in ((1, True), (2, True), (3, False)):
        folder = tmp_path / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "components.pt").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == 2
