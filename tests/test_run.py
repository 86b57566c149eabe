"""What `atesd.run` hands the rollout engine: options computed from the config and the data."""

from __future__ import annotations

import pytest

from atesd.config import load_config
from atesd.prompts import student_prompt
from atesd.run import _engine_options, rollout_length_limit


class _OneProcess:
    num_processes = 1


@pytest.fixture
def vllm_config(tiny_model_dir, tmp_path):
    return load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train={tmp_path / 'train.jsonl'}",
                              "rollout.backend=vllm", "rollout.max_new_tokens=100", "model.dtype=bfloat16"])


def test_vllm_engine_starts_from_the_base_model_with_a_length_limit_of_the_runs_sequences(
        vllm_config, tiny_tokenizer, toy_problems):
    options = _engine_options(vllm_config, _OneProcess(), tiny_tokenizer, toy_problems)
    longest = max(len(student_prompt(tiny_tokenizer, p.problem, vllm_config.prompts)) for p in toy_problems)
    assert options["max_model_len"] == longest + 100
    assert options["model_path"] == vllm_config.model.name_or_path  # no merged checkpoint written first
    assert options["dtype"] == "bfloat16" and "distributed_executor_backend" not in options


def test_length_limit_uses_max_prompt_tokens_when_set(vllm_config, tiny_tokenizer, toy_problems):
    from dataclasses import replace

    capped = replace(vllm_config, data=replace(vllm_config.data, max_prompt_tokens=300))
    assert rollout_length_limit(capped, tiny_tokenizer, toy_problems) == 400


def test_hf_engine_options_carry_no_vllm_settings(vllm_config, tiny_tokenizer, toy_problems):
    from dataclasses import replace

    hf = replace(vllm_config, rollout=replace(vllm_config.rollout, backend="hf"))
    assert set(_engine_options(hf, _OneProcess(), tiny_tokenizer, toy_problems)) == {"batch_size", "decoder"}
