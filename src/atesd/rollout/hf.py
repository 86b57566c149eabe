"""Rollouts with plain `transformers` generation: ŷ ~ p_S(·|x) on CPU or a small GPU.

Prompts are left-padded into batches with an attention mask; `generate` derives the position ids
from that mask (cumsum − 1, checked for transformers 5.x and Qwen3), so a padded row sees the same
positions as the prompt alone, and decodes with its KV cache. Generation stops on the tokenizer's
EOS token and on its pad token.

Where we depart from a bare `model.generate` call:
1. Sampling is exactly temperature → top-k → top-p. The model's own generation_config (for Qwen
   checkpoints: temperature, top-k, top-p, sometimes a repetition penalty) is overridden with
   neutral values for every logits processor that has a non-None neutral value, so rollouts
   follow the configured distribution (the None-valued ones, e.g. suppress_tokens, are rare in
   checkpoints and only logged as a warning when set).
2. Log-probs are recorded step by step by a logits processor that sees the raw logits (before the
   temperature/top-k/top-p warpers, which transformers appends after user processors) rather than
   with `output_logits=True`, which keeps every step's [B, V] logits until the end
   (B·T·V floats: 40 GB for 64 × 1024 tokens of a 152k vocabulary). Only one step's
   log-softmax [B, V] is held at a time.
3. With temperature 0 (greedy) the log-probs are those of the unscaled softmax (temperature 1).
4. A plain `Qwen3ForCausalLM` (the toy models, full fine-tuning) is sampled by the lean decoder of
   `atesd.rollout.lean` (`decoder="lean"`, the default): the same distribution, several times
   faster on small models; other models, and `decoder="generate"`, use `generate`.
5. A sharded policy (FSDP2, DeepSpeed ZeRO-3; `atesd.distributed.is_sharded`) gathers its layers
   in every forward, a collective: `generate` runs with `synced_gpus=True` on several processes
   (ranks keep stepping until all have stopped; transformers turns it on by itself for ZeRO-3 but
   not for accelerate's FSDP2), under `no_grad` rather than `inference_mode` (FSDP's unsharded
   parameters are reused by the training forward), never through the lean decoder (it reads the
   weights directly), and with its parameters gathered once for the whole call
   (`atesd.distributed.unsharded_for_generation`): under FSDP2 one all-gather per unit, not one per
   unit and decoded token (it also initialises the root, which peft's generate bypasses); under
   ZeRO-3 the whole model gathered once with DeepSpeed's per-module hooks off for the call, not
   every layer again at every decoded token.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from atesd.distributed import is_sharded, unsharded_for_generation
from atesd.rollout import lean
from atesd.rollout.base import Rollout, SamplingParams

logger = logging.getLogger(__name__)

# Logits-processor settings of a GenerationConfig whose neutral value is not None: set explicitly
# so a checkpoint's generation_config.json cannot switch them on (generate fills only None fields).
_NEUTRAL_PROCESSORS = dict(
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0,
    min_length=0,
    typical_p=1.0,
    epsilon_cutoff=0.0,
    eta_cutoff=0.0,
    num_beams=1,
    num_return_sequences=1,
    renormalize_logits=False,
    remove_invalid_values=False,
)
# Settings whose neutral value is None: generate would take them from the checkpoint; we warn.
_NONE_NEUTRAL_PROCESSORS = (
    "sequence_bias",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "guidance_scale",
    "min_p",
    "top_h",
    "watermarking_config",
    "stop_strings",
    "min_new_tokens",
)


class _SampledTokenLogProbs(LogitsProcessor):
    """Records log p(ŷ_t) = log_softmax(z_t / τ)[ŷ_t] for every generated token.

    Called by `generate` once per step with input_ids [B, P + t] and the raw logits z_t [B, V].
    At step t the token sampled at step t − 1 is the last column of input_ids, so the previous
    step's log-softmax is gathered then; `finish` gathers the last step's. Returns the logits
    unchanged.
    """

    def __init__(self, temperature: float, prompt_length: int) -> None:
        self.temperature = temperature
        self.prompt_length = prompt_length
        self.previous: torch.Tensor | None = None  # [B, V] log-softmax of the last step
        self.steps: list[torch.Tensor] = []  # each [B]

    def _gather_previous(self, sampled: torch.Tensor) -> None:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, sampled[:, None]).squeeze(-1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.prompt_length:
            self._gather_previous(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[B, T_new] log-probs of sequences[:, prompt_length:]."""
        if sequences.shape[1] > self.prompt_length:
            self._gather_previous(sequences[:, -1])
        self.previous = None
        if not self.steps:
            return sequences.new_zeros((sequences.shape[0], 0), dtype=torch.float32)
        return torch.stack(self.steps, dim=1)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] input ids and attention mask, prompts right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {row} is empty")
        ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() for the block, then every submodule's train/eval flag as it was."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


class HFRolloutEngine:
    """RolloutEngine over a live `transformers` (or peft-wrapped) causal LM.

    batch_size: prompts per generation call; longer lists are split, order preserved.
    decoder: "lean" samples models that `atesd.rollout.lean.supports` with the lean decoder (and
        everything else with `generate`); "generate" always uses `generate`.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64, decoder: str = "lean") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decoder not in ("lean", "generate"):
            raise ValueError(f"decoder must be 'lean' or 'generate', got {decoder!r}")
        self.decoder = decoder
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; generation could never stop")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop_ids = tuple(dict.fromkeys([tokenizer.eos_token_id, self.pad_id]))
        self._warn_about_checkpoint_processors()

    def sync_weights(self, model) -> None:
        """The HF backend samples from the live model object itself, so an optimizer step is seen
        at once; this only stores the reference (e.g. when the caller swaps in another object)."""
        self.model = model

    def sleep(self) -> None:
        """Nothing to release: the HF backend samples from the training model itself."""

    def close(self) -> None:
        """Nothing to release."""

    def _warn_about_checkpoint_processors(self) -> None:
        config = getattr(self.model, "generation_config", None)
        set_fields = [f for f in _NONE_NEUTRAL_PROCESSORS if getattr(config, f, None) is not None]
        if set_fields:
            logger.warning(
                "the model's generation_config sets %s; generate() applies them to rollouts on top of "
                "temperature/top-k/top-p", ", ".join(set_fields)
            )

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        # greedy: transformers' own defaults, which it neither applies nor warns about
        sampling = dict(do_sample=False, temperature=1.0, top_k=50, top_p=1.0)
        if not params.greedy:
            sampling = dict(do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            eos_token_id=list(self.stop_ids),
            pad_token_id=self.pad_id,
            use_cache=True,
            return_dict_in_generate=False,
            **sampling,
            **_NEUTRAL_PROCESSORS,
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Rollout]:
        """One completion per prompt, in order. A set seed makes the call reproducible without
        touching the global RNG (torch.manual_seed inside fork_rng)."""
        if not prompts:
            return []
        device = _device_of(self.model)
        devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        seeded = params.seed is not None
        with contextlib.ExitStack() as stack:
            if seeded:
                stack.enter_context(torch.random.fork_rng(devices=devices))
                torch.manual_seed(params.seed)
            stack.enter_context(_eval_mode(self.model))
            stack.enter_context(torch.no_grad() if is_sharded(self.model) else torch.inference_mode())
            rollouts: list[Rollout] = []
            for start in range(0, len(prompts), self.batch_size):
                rollouts.extend(self._generate_batch(prompts[start:start + self.batch_size], params, device))
        return rollouts

    def _generate_batch(self, prompts: Sequence[Sequence[int]], params: SamplingParams, device) -> list[Rollout]:
        sharded = is_sharded(self.model)
        if self.decoder == "lean" and not sharded and lean.supports(self.model):
            tokens, logprobs = lean.LeanDecoder(self.model).sample(prompts, params, self.stop_ids, self.pad_id)
            return [self._rollout(p, t, lp) for p, t, lp in zip(prompts, tokens, logprobs)]
        input_ids, attention_mask = _left_pad(prompts, self.pad_id, device)
        recorder = _SampledTokenLogProbs(1.0 if params.greedy else params.temperature, input_ids.shape[1])
        with unsharded_for_generation(self.model, self.pad_id) if sharded else contextlib.nullcontext():
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self._generation_config(params),
                logits_processor=LogitsProcessorList([recorder]),
                synced_gpus=sharded and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1,
            )
        logprobs = recorder.finish(sequences).cpu()
        new_tokens = sequences[:, input_ids.shape[1]:].cpu()
        return [self._rollout(p, new_tokens[row].tolist(), logprobs[row].tolist()) for row, p in enumerate(prompts)]

    def _rollout(self, prompt: Sequence[int], tokens: list[int], logprobs: list[float]) -> Rollout:
        """Cuts a generated row after its first stop token (what follows is padding)."""
        stop = next((i for i, token in enumerate(tokens) if token in self.stop_ids), None)
        end = len(tokens) if stop is None else stop + 1
        completion = tuple(tokens[:end])
        return Rollout(
            prompt_ids=tuple(int(t) for t in prompt),
            completion_ids=completion,
            text=self.tokenizer.decode(list(completion), skip_special_tokens=True),
            logprobs=tuple(logprobs[:end]),
            truncated=stop is None,
        )
