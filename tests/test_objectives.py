"""SFT and GRPO as configurations of the one loop, plus the objective helpers."""

import json

import pytest
import torch

from atesd.config import load_config
from atesd.data import write_problems
from atesd.scoring import token_logprobs
from atesd.train import train


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    from atesd.toy.task import toy_problems

    root = tmp_path_factory.mktemp("objectives-world")
    write_problems(root / "train.jsonl", toy_problems(24, seed=5, split="train"))
    return root, tiny_model_dir


def _cfg(world, out, overrides):
    root, model = world
    base = [f"model.name_or_path={model}", f"data.train={root / 'train.jsonl'}", "rollout.max_new_tokens=10",
            "rollout.temperature=1.0", "rollout.top_p=1.0", "rollout.top_k=0", "optim.lr=0.01",
            "optim.max_grad_norm=1.0", "steps=2", "prompts_per_step=4", "save_every=10", "progress=false",
            f"output_dir={out}"]
    return load_config(None, base + overrides)


def test_token_logprobs_match_log_softmax_and_their_gradient():
    torch.manual_seed(0)
    hidden = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 30, (13,))
    got = token_logprobs(hidden, weight, ids, temperature=1.3, chunk_size=4)
    want = torch.log_softmax(hidden @ weight.t() / 1.3, -1).gather(-1, ids[:, None]).squeeze(-1)
    torch.testing.assert_close(got, want)
    g1 = torch.autograd.grad(got.sum(), (hidden, weight))
    g2 = torch.autograd.grad(want.sum(), (hidden, weight))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_sft_trains_on_reference_solutions_without_rollouts(world, tmp_path):
    result = train(_cfg(world, tmp_path / "sft", ["loss.objective=sft"]))
    metrics = [json.loads(l) for l in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and metrics[0]["train/loss"] > 0  # NLL of the references
    assert "rollout/self_confidence" not in metrics[0]  # no sampling happened
    assert metrics[1]["train/loss"] < metrics[0]["train/loss"]  # lr 0.01 on the same kind of text
    assert result.reveal_ratios == [1.0, 1.0]


def test_grpo_samples_groups_and_logs_verified_accuracy(world, tmp_path):
    train(_cfg(world, tmp_path / "grpo", ["loss.objective=grpo", "rollout.num_generations=4",
                                           "loss.grpo_kl_coef=0.1"]))
    metrics = [json.loads(l) for l in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    # 4 prompts x 4 rollouts each
    assert metrics[0]["rollout/tokens"] <= 16 * 10 and "rollout/accuracy" in metrics[0]


def test_lora_run_saves_adapter_and_merged_model_and_frozen_teacher_needs_no_copy(world, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(_cfg(world, out, ["model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=8",
                            "model.gradient_checkpointing=true"]))
    assert (out / "final" / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    base = AutoModelForCausalLM.from_pretrained(world[1])
    changed = [n for (n, p), q in zip(merged.named_parameters(), base.parameters()) if not torch.equal(p, q)]
    assert changed and all("proj" in n for n in changed)  # only LoRA-targeted projections moved


@pytest.mark.parametrize("kind", ["live", "ema"])
def test_live_and_ema_teachers_run(world, tmp_path, kind):
    train(_cfg(world, tmp_path / kind, [f"teacher.kind={kind}", "teacher.ema_decay=0.5"]))
    assert (tmp_path / kind / "final" / "model.safetensors").exists()
