"""HFRolloutEngine on the tiny random-weight Qwen3: padding, seeding, log-probs, stopping — with
both decoders (the lean decoder of atesd.rollout.lean and transformers' generate)."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import replace

import pytest
import torch

from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout import make_rollout_engine
from atesd.rollout.base import SamplingParams
from atesd.rollout.hf import HFRolloutEngine

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=12, temperature=0.8, top_p=0.9, top_k=20, seed=7)


@pytest.fixture(params=["lean", "generate"])
def decoder(request) -> str:
    return request.param


@pytest.fixture
def prompts(tiny_tokenizer, toy_problems):
    """Five student prompts of different lengths (so batches need left padding)."""
    cfg = PromptConfig()
    picked = [toy_problems[i] for i in (0, 5, 10, 15, 19)]
    ids = [student_prompt(tiny_tokenizer, p.problem, cfg) for p in picked]
    ids[1] = ids[1][-7:]  # a much shorter one
    assert len({len(p) for p in ids}) > 1
    return ids


@pytest.fixture
def sharp_model(tiny_model):
    """The tiny model with its weight matrices redrawn from N(0, 0.5²) (seeded): its logits are
    far from uniform, so greedy tokens depend on the context and padding mistakes change them."""
    sharp = copy.deepcopy(tiny_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in sharp.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return sharp


def _teacher_forced_logprobs(model, prompt, completion, temperature):
    """log_softmax(z / τ)[ŷ_t] from one full forward pass over prompt + completion (no padding)."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def _with_logit_bias(model, token_ids, bias: float):
    """A copy whose output head adds `bias` to the logits of `token_ids` (to make EOS likely or
    impossible in a random-weight model)."""
    biased = copy.deepcopy(model)
    head = biased.lm_head
    new_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new_head.weight.copy_(head.weight)
        new_head.bias.zero_()
        new_head.bias[list(token_ids)] = bias
    biased.lm_head = new_head
    return biased


def test_left_padded_batched_greedy_equals_each_prompt_alone(sharp_model, tiny_tokenizer, prompts, decoder):
    batched = HFRolloutEngine(sharp_model, tiny_tokenizer, batch_size=3, decoder=decoder).generate(prompts, GREEDY)
    alone = HFRolloutEngine(sharp_model, tiny_tokenizer, batch_size=1, decoder=decoder)
    for prompt, rollout in zip(prompts, batched):
        single = alone.generate([prompt], GREEDY)[0]
        assert rollout.prompt_ids == tuple(prompt)
        assert rollout.completion_ids == single.completion_ids
        assert rollout.logprobs == pytest.approx(single.logprobs, abs=1e-5)
    assert len({r.completion_ids for r in batched}) > 1  # outputs depend on the prompt


def test_same_seed_same_samples_and_global_rng_untouched(sharp_model, tiny_tokenizer, prompts, decoder):
    engine = HFRolloutEngine(sharp_model, tiny_tokenizer, batch_size=4, decoder=decoder)
    rng_before = torch.get_rng_state()
    first = engine.generate(prompts * 2, SAMPLED)
    assert torch.equal(torch.get_rng_state(), rng_before)
    second = engine.generate(prompts * 2, SAMPLED)
    other_seed = engine.generate(prompts * 2, replace(SAMPLED, seed=8))
    assert first == second
    assert [r.completion_ids for r in first] != [r.completion_ids for r in other_seed]


def test_logprobs_equal_teacher_forced_temperature_scaled_log_softmax(sharp_model, tiny_tokenizer, prompts, decoder):
    rollouts = HFRolloutEngine(sharp_model, tiny_tokenizer, batch_size=5, decoder=decoder).generate(prompts, SAMPLED)
    for rollout in rollouts:
        assert len(rollout.logprobs) == len(rollout.completion_ids)
        expected = _teacher_forced_logprobs(sharp_model, rollout.prompt_ids, rollout.completion_ids, SAMPLED.temperature)
        assert torch.allclose(torch.tensor(rollout.logprobs), expected, atol=1e-4)


def test_greedy_logprobs_are_unscaled_log_softmax(sharp_model, tiny_tokenizer, prompts, decoder):
    rollout = HFRolloutEngine(sharp_model, tiny_tokenizer, decoder=decoder).generate(prompts[:1], GREEDY)[0]
    expected = _teacher_forced_logprobs(sharp_model, rollout.prompt_ids, rollout.completion_ids, 1.0)
    assert torch.allclose(torch.tensor(rollout.logprobs), expected, atol=1e-4)


def test_completion_stops_at_eos_with_nothing_after_it(tiny_model, tiny_tokenizer, prompts, decoder):
    eos = tiny_tokenizer.eos_token_id
    model = _with_logit_bias(tiny_model, [eos], bias=4.0)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=0)
    rollouts = HFRolloutEngine(model, tiny_tokenizer, batch_size=8, decoder=decoder).generate(prompts * 3, params)
    stopped = [r for r in rollouts if not r.truncated]
    assert stopped, "the EOS bias should make some samples stop early"
    stop_ids = {eos, tiny_tokenizer.pad_token_id}
    for rollout in rollouts:
        stops = [i for i, t in enumerate(rollout.completion_ids) if t in stop_ids]
        if rollout.truncated:
            assert stops == [] and len(rollout.completion_ids) == 16
        else:
            assert stops == [len(rollout.completion_ids) - 1]
        assert tiny_tokenizer.eos_token not in rollout.text
        assert rollout.text == tiny_tokenizer.decode(list(rollout.completion_ids), skip_special_tokens=True)
        assert len(rollout.logprobs) == len(rollout.completion_ids)


def test_truncated_when_max_new_tokens_reached(tiny_model, tiny_tokenizer, prompts, decoder):
    stop_ids = [tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id]
    model = _with_logit_bias(tiny_model, stop_ids, bias=-100.0)
    rollouts = HFRolloutEngine(model, tiny_tokenizer, decoder=decoder).generate(prompts, SamplingParams(max_new_tokens=3, seed=1))
    assert all(r.truncated and len(r.completion_ids) == 3 for r in rollouts)


def test_batches_larger_than_batch_size_keep_order(sharp_model, tiny_tokenizer, prompts, decoder):
    whole = HFRolloutEngine(sharp_model, tiny_tokenizer, batch_size=64, decoder=decoder).generate(prompts, GREEDY)
    split = HFRolloutEngine(sharp_model, tiny_tokenizer, batch_size=2, decoder=decoder).generate(prompts, GREEDY)
    assert [r.prompt_ids for r in split] == [tuple(p) for p in prompts]
    assert [r.completion_ids for r in split] == [r.completion_ids for r in whole]


def test_generation_restores_each_modules_train_flag(tiny_model, tiny_tokenizer, prompts, decoder):
    tiny_model.train()
    tiny_model.model.layers[0].eval()  # a mixed state must come back as it was
    modes = [m.training for m in tiny_model.modules()]
    rollouts = HFRolloutEngine(tiny_model, tiny_tokenizer, decoder=decoder).generate(prompts[:2], GREEDY)
    assert [m.training for m in tiny_model.modules()] == modes
    assert all(len(r.completion_ids) > 0 for r in rollouts)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers alias
def test_peft_wrapped_model_generates_like_the_base_at_init(sharp_model, tiny_tokenizer, prompts):
    from peft import LoraConfig, get_peft_model

    base = HFRolloutEngine(sharp_model, tiny_tokenizer).generate(prompts[:2], GREEDY)
    peft_model = get_peft_model(copy.deepcopy(sharp_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    engine = HFRolloutEngine(peft_model, tiny_tokenizer)
    wrapped = engine.generate(prompts[:2], GREEDY)
    assert [r.completion_ids for r in wrapped] == [r.completion_ids for r in base]  # LoRA B = 0 at init
    engine.sync_weights(sharp_model)
    assert engine.model is sharp_model


def test_make_rollout_engine_dispatches_and_explains_missing_vllm(tiny_model, tiny_tokenizer):
    engine = make_rollout_engine("hf", tiny_model, tiny_tokenizer, batch_size=3)
    assert isinstance(engine, HFRolloutEngine) and engine.batch_size == 3
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="rollout backend 'vllm' is unavailable: .*`vllm` extra"):
            make_rollout_engine("vllm", tiny_model, tiny_tokenizer)
    with pytest.raises(ValueError, match="unknown rollout backend"):
        make_rollout_engine("jax", tiny_model, tiny_tokenizer)
