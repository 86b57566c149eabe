"""The lean decoder computes what the model computes: same logits as its forward, same greedy ids as
generate (also when finished rows are dropped from the batch), the same top-k/top-p filter."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout import lean
from atesd.rollout.base import SamplingParams
from atesd.rollout.hf import HFRolloutEngine


@pytest.fixture
def prompts(tiny_tokenizer, toy_problems):
    ids = [student_prompt(tiny_tokenizer, p.problem, PromptConfig()) for p in toy_problems[:8]]
    ids[2] = ids[2][-5:]  # uneven lengths: left padding
    return ids


@pytest.fixture
def sharp_model(tiny_model):
    sharp = copy.deepcopy(tiny_model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in sharp.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.5 if parameter.ndim == 2 else 1.0))
    return sharp


def test_supports_plain_qwen3_only(tiny_model):
    from peft import LoraConfig, get_peft_model

    assert lean.supports(tiny_model)
    assert not lean.supports(get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=2, target_modules=["q_proj"])))
    sliding = copy.deepcopy(tiny_model)
    sliding.config.use_sliding_window = True
    assert not lean.supports(sliding)


def test_prefill_and_decode_hidden_states_match_the_models_forward(sharp_model, tiny_tokenizer, prompts):
    decoder = lean.LeanDecoder(sharp_model)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width + 1), tiny_tokenizer.pad_token_id)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):width] = torch.tensor(p)
        mask[row, width - len(p):] = True
    ids[:, width] = 7  # one decoding step after the prompt
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    layers = lean._layers(sharp_model)
    cache = [(torch.empty(len(prompts), decoder.kv_heads, width + 1, decoder.head_dim),
              torch.empty(len(prompts), decoder.kv_heads, width + 1, decoder.head_dim)) for _ in layers]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    prefill_mask = ((causal & mask[:, None, :width]) | torch.eye(width, dtype=torch.bool))[:, None]
    with torch.no_grad():
        lean_prefill = decoder._forward(layers, ids[:, :width], positions[:, :width], prefill_mask, cache, 0)[:, -1]
        lean_step = decoder._forward(layers, ids[:, width:], positions[:, width:], mask[:, None, None], cache, width)[:, -1]
        out = sharp_model(input_ids=ids, attention_mask=mask.long(), position_ids=positions, output_hidden_states=True)
    hidden = out.hidden_states[-1]
    assert torch.allclose(lean_prefill, hidden[:, width - 1], atol=1e-5)
    assert torch.allclose(lean_step, hidden[:, width], atol=1e-5)


def test_greedy_ids_equal_generate_when_rows_stop_at_different_steps(sharp_model, tiny_tokenizer, prompts):
    # an EOS logit bias, set so that EOS wins at about one position in eight, makes greedy rows stop
    # at different steps, so finished rows are dropped from the lean decoder's batch
    eos = tiny_tokenizer.eos_token_id
    with torch.no_grad():
        logits = sharp_model(input_ids=torch.randint(5, 300, (16, 20), generator=torch.Generator().manual_seed(0))).logits
    others = logits.clone()
    others[..., eos] = float("-inf")
    gap = (others.max(-1).values - logits[..., eos]).flatten()
    model = copy.deepcopy(sharp_model)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[eos] = float(gap.quantile(0.125))
    model.lm_head = head
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    fast = HFRolloutEngine(model, tiny_tokenizer, decoder="lean").generate(prompts * 2, params)
    slow = HFRolloutEngine(model, tiny_tokenizer, decoder="generate").generate(prompts * 2, params)
    lengths = {len(r.completion_ids) for r in fast}
    assert len(lengths) > 2, "rows should stop at different steps"
    assert [r.completion_ids for r in fast] == [r.completion_ids for r in slow]
    for a, b in zip(fast, slow):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


@pytest.mark.parametrize("top_k, top_p", [(0, 0.9), (5, 1.0), (20, 0.7), (3, 0.5)])
def test_filter_equals_transformers_warpers(top_k, top_p):
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(top_k)) * 3
    warpers = [TemperatureLogitsWarper(1.3)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    warpers.append(TopPLogitsWarper(top_p))
    expected = LogitsProcessorList(warpers)(torch.zeros(6, 1, dtype=torch.long), logits.clone())
    ours = lean.filter_top_k_top_p(logits / 1.3, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    assert torch.allclose(ours[~torch.isinf(ours)], expected[~torch.isinf(expected)])


def test_sampled_tokens_follow_the_filtered_distribution(tiny_model, tiny_tokenizer, prompts):
    # with top-k 2 every first token is one of the two most likely ones, and both occur
    params = SamplingParams(max_new_tokens=1, temperature=1.5, top_k=2, seed=0)
    rollouts = HFRolloutEngine(tiny_model, tiny_tokenizer, decoder="lean").generate([prompts[0]] * 200, params)
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([prompts[0]])).logits[0, -1]
    top2 = set(logits.topk(2).indices.tolist())
    seen = {r.completion_ids[0] for r in rollouts}
    assert seen == top2
