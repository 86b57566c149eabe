"""Periodic validation on data.val keeps the best model by validation Average@k."""

import json

import pytest

from atesd.config import ConfigError, load_config
from atesd.data import write_problems
from atesd.train import train


def test_validation_logs_accuracy_and_keeps_the_best_model(tiny_model_dir, tmp_path):
    from atesd.toy.task import toy_problems

    write_problems(tmp_path / "train.jsonl", toy_problems(16, seed=1, split="train"))
    write_problems(tmp_path / "val.jsonl", toy_problems(5, seed=2, split="val"))
    out = tmp_path / "run"
    train(load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"data.train={tmp_path / 'train.jsonl'}",
        f"data.val={tmp_path / 'val.jsonl'}", "validation.every=2", "validation.k=2",
        "rollout.max_new_tokens=8", "steps=3", "prompts_per_step=2", "save_every=10", "progress=false",
        f"output_dir={out}",
    ]))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [m["step"] for m in metrics if "eval/val_average_at_k" in m]
    assert evaluated == [1, 2]  # after step 2 (every=2) and after the last step
    best = json.loads((out / "best" / "validation.json").read_text())
    assert best["k"] == 2 and best["n_problems"] == 5 and (out / "best" / "model.safetensors").exists()


def test_validation_without_a_validation_file_is_a_config_error():
    with pytest.raises(ConfigError, match="data.val"):
        load_config(None, ["model.name_or_path=m", "data.train=t.jsonl", "validation.every=5"])
