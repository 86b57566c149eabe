"""Rollout backends and the one place a backend is chosen.

`hf` samples with `transformers` generation from the live model; `vllm` (the `vllm` extra) uses a
colocated vLLM engine holding a copy of the weights. Nothing else in atesd imports a backend module
directly.
"""

from __future__ import annotations

import importlib.util

from atesd.rollout.base import Rollout, RolloutEngine, SamplingParams

BACKENDS = ("hf", "vllm")


def make_rollout_engine(backend: str, model, tokenizer, **kw) -> RolloutEngine:
    """The rollout engine named by `backend` ("hf" or "vllm") over `model`; `kw` goes to its
    constructor (HF: batch_size; vLLM: see `VLLMRolloutEngine`)."""
    if backend == "hf":
        from atesd.rollout.hf import HFRolloutEngine

        return HFRolloutEngine(model, tokenizer, **kw)
    if backend == "vllm":
        from atesd.rollout.vllm import VLLM_MISSING, VLLMRolloutEngine  # imports vllm only when built

        if importlib.util.find_spec("vllm") is None:
            raise ImportError(f"rollout backend 'vllm' is unavailable: {VLLM_MISSING}")
        return VLLMRolloutEngine(model, tokenizer, **kw)
    raise ValueError(f"unknown rollout backend {backend!r}; expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Rollout", "RolloutEngine", "SamplingParams", "make_rollout_engine"]
