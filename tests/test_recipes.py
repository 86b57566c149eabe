"""The Qwen3 paper recipes in configs/: each size and method differs from its neighbours only where
the papers say it should, and every file's header says how to run it, on what, for how long."""

import dataclasses
from pathlib import Path

import pytest

from atesd.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = ("1.7b", "4b", "8b")
METHODS = ("opsd", "atesd", "grpo")


def _flat(cfg) -> dict:
    out = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = value

    walk(dataclasses.asdict(cfg), "")
    return out


def _recipe(size: str, method: str) -> dict:
    return _flat(load_config(CONFIGS / f"qwen3-{size}-{method}.yaml"))


def _differences(a: dict, b: dict) -> dict:
    return {key: (a[key], b[key]) for key in a if a[key] != b[key]}


@pytest.mark.parametrize("size", SIZES[1:])
def test_larger_opsd_recipe_changes_only_the_model_and_for_8b_the_published_clip(size):
    changed = _differences(_recipe("1.7b", "opsd"), _recipe(size, "opsd"))
    expected = {"model.name_or_path": ("Qwen/Qwen3-1.7B", f"Qwen/Qwen3-{size.upper()}"),
                "output_dir": ("runs/qwen3-1.7b-opsd", f"runs/qwen3-{size}-opsd")}
    if size == "8b":
        expected["loss.token_clip"] = (0.05, 0.06)  # OPSD: 0.05 for 1.7B/4B, 0.06 for 8B
    assert changed == expected


@pytest.mark.parametrize("size", SIZES)
def test_atesd_recipe_is_its_sizes_opsd_recipe_plus_the_same_learned_controller(size):
    opsd, atesd = _recipe(size, "opsd"), _recipe(size, "atesd")
    changed = _differences(opsd, atesd)
    assert changed.pop("output_dir") == (f"runs/qwen3-{size}-opsd", f"runs/qwen3-{size}-atesd")
    assert changed.pop("exposure.policy") == ("fixed", "learned")
    assert all(key.startswith("exposure.") for key in changed)
    reference = {k: v for k, v in _recipe("1.7b", "atesd").items() if k.startswith("exposure.")}
    assert {k: v for k, v in atesd.items() if k.startswith("exposure.")} == reference


@pytest.mark.parametrize("size", SIZES[1:])
def test_larger_grpo_recipe_changes_only_the_model_and_keeps_each_group_in_one_micro_batch(size):
    changed = _differences(_recipe("1.7b", "grpo"), _recipe(size, "grpo"))
    assert changed.pop("model.name_or_path")[1] == f"Qwen/Qwen3-{size.upper()}"
    assert changed.pop("output_dir")[1] == f"runs/qwen3-{size}-grpo"
    assert set(changed) <= {"optim.grad_accum_steps"}
    grpo = _recipe(size, "grpo")
    prompts_per_gpu = grpo["prompts_per_step"] // 8
    assert prompts_per_gpu % grpo["optim.grad_accum_steps"] == 0  # whole groups per micro-batch


@pytest.mark.parametrize("size", SIZES[1:])
@pytest.mark.parametrize("method", METHODS)
def test_recipe_header_states_its_command_hardware_and_expected_time(size, method):
    name = f"qwen3-{size}-{method}.yaml"
    header = [line for line in (CONFIGS / name).read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "accelerate launch" in text and f"--config configs/{name}" in text
    assert "Hardware:" in text and "Expected time:" in text


REFERENCE_SCRIPTS = {"optim.lr": 2e-4, "rollout.max_new_tokens": 2048, "loss.divergence": "jsd", "loss.jsd_beta": 0.5}


@pytest.mark.parametrize("method", ("opsd", "atesd"))
def test_reference_scripts_variant_changes_only_lr_tokens_and_divergence(method):
    paper = _recipe("1.7b", method)
    reference = _flat(load_config(CONFIGS / f"qwen3-1.7b-{method}-reference.yaml"))
    changed = _differences(paper, reference)
    assert changed.pop("output_dir")[1] == f"runs/qwen3-1.7b-{method}-reference"
    assert {key: new for key, (old, new) in changed.items()} == {
        key: value for key, value in REFERENCE_SCRIPTS.items() if paper[key] != value}
    assert paper["optim.lr"] == 5e-6 and paper["rollout.max_new_tokens"] == 1024
    assert paper["loss.divergence"] == "forward_kl"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_recipes_skip_bad_rows_up_to_a_share_and_headers_state_paper_and_reference_values(size, method):
    recipe = _recipe(size, method)
    assert recipe["data.on_bad_row"] == "skip" and recipe["data.max_bad_row_share"] == 0.05
    if method == "opsd":
        header = (CONFIGS / f"qwen3-{size}-{method}.yaml").read_text()
        assert "Paper vs the OPSD reference scripts" in header and "2e-4" in header and "JSD" in header
        assert "5e-4" in header  # how far 100 Adam steps at 5e-6 can move LoRA B


@pytest.mark.parametrize("size", SIZES)
def test_atesd_header_states_the_controllers_update_count_and_what_the_toy_shows(size):
    recipe = _recipe(size, "atesd")
    updates = recipe["steps"] // (recipe["exposure.hold_steps"] * recipe["exposure.decisions_per_update"])
    header = (CONFIGS / f"qwen3-{size}-atesd.yaml").read_text()
    assert f"{updates} updates" in header and "random exposure" in header


def test_label_free_recipe_is_the_opsd_recipe_plus_the_per_feature_controller_in_forward_mode():
    opsd = _recipe("1.7b", "opsd")
    label_free = _flat(load_config(CONFIGS / "qwen3-1.7b-atesd-per-feature.yaml"))
    changed = _differences(opsd, label_free)
    assert changed.pop("output_dir") == ("runs/qwen3-1.7b-opsd", "runs/qwen3-1.7b-atesd-per-feature")
    assert all(key.startswith("exposure.") for key in changed)
    assert label_free["model.dtype"] == "bfloat16" and label_free["model.lora.enabled"]
    assert (label_free["exposure.granularity"], label_free["exposure.reward"], label_free["exposure.credit_derivative"],
            label_free["exposure.feature"]) == ("per_feature", "counterfactual", "forward_mode", "correct")
    header = (CONFIGS / "qwen3-1.7b-atesd-per-feature.yaml").read_text().split("\nbase:")[0]
    assert "accelerate launch" in header and "Hardware:" in header and "Expected time:" in header
