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


def test_grpo_learns_a_one_step_bandit_whose_best_answer_is_known(tiny_model, tiny_tokenizer):
    """A bandit that a broken GRPO cannot solve: two prompts, each with its own rewarded token among four
    candidates; completions are sampled on-policy (the model's next-token distribution over the
    candidates), scored, and trained on with the real objective (group-normalised advantages over G = 8
    rollouts per prompt, per-rollout token weights, the head path). The rewarded token's share must rise
    from about 1/4 to above 0.9 on both prompts: a flipped sign or advantages given to the wrong
    rollouts leave it below (both checked by mutating the objective). Groups that mix prompts only
    shift the baseline, which a bandit cannot see: `test_group_advantages_...` checks the grouping."""
    from atesd.config import LossConfig
    from atesd.distributed import through_head
    from atesd.objectives import GroupRelative, StepViews
    from atesd.scoring import build_sequences

    torch.manual_seed(0)
    model = tiny_model.train()
    prompts = [tiny_tokenizer.encode("1+2=?"), tiny_tokenizer.encode("7*3=?")]
    candidates = torch.tensor(sorted({tiny_tokenizer.encode(t)[0] for t in ("3", "5", "8", "9")}))
    assert len(candidates) == 4
    rewarded = [candidates[0].item(), candidates[2].item()]
    objective = GroupRelative(LossConfig(objective="grpo", temperature=1.0, chunk_size=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    group = 8

    def candidate_probs():
        with torch.no_grad():
            batch = build_sequences(prompts, [[0], [0]], tiny_tokenizer.pad_token_id)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids).logits[:, -2]  # predicts the completion token
            return torch.softmax(logits[:, candidates], -1)

    start = candidate_probs()
    for _ in range(40):
        probs = candidate_probs()
        picks = [candidates[torch.multinomial(probs[i], group, replacement=True)].tolist() for i in range(2)]
        completions = [[token] for i in range(2) for token in picks[i]]
        rows = [prompts[i] for i in range(2) for _ in range(group)]
        rewards = torch.tensor([float(c[0] == rewarded[i // group]) for i, c in enumerate(completions)])
        views = StepViews(student=build_sequences(rows, completions, tiny_tokenizer.pad_token_id), rewards=rewards,
                          group_size=group)
        loss, _ = objective.loss(model, lambda fn, *x: through_head(model, fn, *x), None, model, views, 2 * group)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = candidate_probs()
    target_share = lambda probs: [probs[i, candidates.tolist().index(rewarded[i])].item() for i in range(2)]  # noqa: E731
    assert max(target_share(start)) < 0.5
    assert min(target_share(end)) > 0.9, (target_share(start), target_share(end))


def test_group_advantages_normalise_within_each_prompts_group_and_zero_equal_groups():
    from atesd.objectives import group_advantages

    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    got = group_advantages(rewards, 4)
    third = 3 ** 0.5
    want = torch.tensor([third, -1 / third, -1 / third, -1 / third, 0, 0, 0, 0, -1, 1, -1, 1])
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
