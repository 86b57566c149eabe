"""benchmarks/credit_probe.py: the paired z of each ratio against full exposure, and the model folder
it builds from a world and a checkpoint."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from credit_probe import checkpoint_model, z_scores  # noqa: E402


def test_z_is_the_paired_mean_difference_over_its_standard_error():
    table = torch.tensor([[1.0, 2.0, 3.0, 6.0],    # α = 0.5
                          [0.0, 0.0, 0.0, 0.0],    # α = 0.75: equal to α = 1 → z = 0
                          [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # α = 1
    z = z_scores(table, [0, 1, 2, 3])
    diff = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    assert math.isclose(z[0], float(diff.mean() / (diff.std() / 2)), rel_tol=1e-9)
    assert z[1] == 0.0 and len(z) == 2
    assert math.isclose(z_scores(table, [0, 3])[0], 3.5 / (math.sqrt(12.5) / math.sqrt(2)), rel_tol=1e-9)


def test_model_folder_takes_the_world_files_and_the_checkpoint_weights(tmp_path):
    world, checkpoint, folder = tmp_path / "world", tmp_path / "ckpt", tmp_path / "model"
    for path in (world, checkpoint, folder):
        path.mkdir()
    (world / "config.json").write_text("{}")
    (world / "model.safetensors").write_bytes(b"world weights")
    (world / "data").mkdir()  # folders are not copied
    (checkpoint / "model.safetensors").write_bytes(b"step weights")
    assert checkpoint_model(world, checkpoint, folder) == folder
    assert (folder / "model.safetensors").read_bytes() == b"step weights"
    assert (folder / "config.json").read_text() == "{}" and not (folder / "data").exists()
