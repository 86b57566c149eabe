"""The config schema: YAML + dotted overrides, unknown keys rejected with a suggestion."""

import pytest

from atesd.config import ConfigError, TrainConfig, load_config, valid_keys


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_dotted_overrides_reach_nested_fields(tmp_path):
    path = _write(tmp_path, "model:\n  name_or_path: m\ndata:\n  train: t.jsonl\nsteps: 7\n")
    cfg = load_config(path, ["exposure.hold_steps=3", "loss.token_clip=0.05", "exposure.policy=learned"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.steps == 7 and cfg.exposure.hold_steps == 3 and cfg.loss.token_clip == 0.05
    assert cfg.exposure.policy == "learned"


def test_unknown_override_key_suggests_the_closest_valid_one(tmp_path):
    path = _write(tmp_path, "model:\n  name_or_path: m\ndata:\n  train: t.jsonl\n")
    with pytest.raises(ConfigError, match="did you mean 'exposure.hold_steps'"):
        load_config(path, ["exposure.hold_step=4"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = _write(tmp_path, "model:\n  name_or_path: m\ndata:\n  train: t.jsonl\noptim:\n  lr_rate: 1\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: unknown config key 'optim.lr_rate'"):
        load_config(path)


def test_missing_required_value_is_reported(tmp_path):
    path = _write(tmp_path, "data:\n  train: t.jsonl\n")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        load_config(path)


def test_bad_choice_and_bad_type_are_rejected(tmp_path):
    path = _write(tmp_path, "model:\n  name_or_path: m\ndata:\n  train: t.jsonl\n")
    with pytest.raises(ConfigError, match="teacher.kind"):
        load_config(path, ["teacher.kind=smart"])
    with pytest.raises(ConfigError, match="steps"):
        load_config(path, ["steps=many"])


def test_grpo_without_a_group_is_rejected(tmp_path):
    path = _write(tmp_path, "model:\n  name_or_path: m\ndata:\n  train: t.jsonl\n")
    with pytest.raises(ConfigError, match="num_generations"):
        load_config(path, ["loss.objective=grpo"])


def test_valid_keys_cover_every_section():
    keys = valid_keys()
    for key in ("model.lora.rank", "exposure.lookahead_steps", "loss.divergence", "optim.warmup_steps", "seed"):
        assert key in keys


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        load_config(path)


def test_base_file_is_merged_first_and_overridden_by_the_child(tmp_path):
    (tmp_path / "parent.yaml").write_text("model:\n  name_or_path: m\ndata:\n  train: t.jsonl\nsteps: 9\nseed: 3\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nsteps: 4\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.steps == 4 and cfg.seed == 3 and cfg.model.name_or_path == "m"
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yaml")


def test_data_max_prompt_tokens_is_off_by_default_and_must_be_positive(tmp_path):
    path = _write(tmp_path, "model:\n  name_or_path: m\ndata:\n  train: t.jsonl\n")
    assert load_config(path).data.max_prompt_tokens is None
    assert load_config(path, ["data.max_prompt_tokens=512"]).data.max_prompt_tokens == 512
    with pytest.raises(ConfigError, match=r"data\.max_prompt_tokens must be >= 1"):
        load_config(path, ["data.max_prompt_tokens=0"])
