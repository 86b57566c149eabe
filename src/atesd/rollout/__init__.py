"""Rollout backends and the one place a backend is chosen.

`hf` samples with `transformers` generation from the live model; `vllm` (the `vllm` extra) will
use a colocated vLLM engine. Nothing else in atesd imports a backend module directly.
"""

from __future__ import annotations

from atesd.rollout.base import Rollout, RolloutEngine, SamplingParams

BACKENDS = ("hf", "vllm")


def make_rollout_engine(backend: str, model, tokenizer, **kw) -> RolloutEngine:
    """The rollout engine named by `backend` ("hf" or "vllm") over `model`; `kw` goes to its
    constructor (HF: batch_size)."""
    if backend == "hf":
        from atesd.rollout.hf import HFRolloutEngine

        return HFRolloutEngine(model, tokenizer, **kw)
    if backend == "vllm":
        try:
            from atesd.rollout.vllm import VLLMRolloutEngine
        except ImportError as error:
            if getattr(error, "name", None) == "atesd.rollout.vllm":
                reason = "this version of atesd has no vLLM backend yet; use rollout.backend=hf"
            else:
                reason = "the vLLM backend needs the `vllm` extra: pip install 'atesd[vllm]'"
            raise ImportError(f"rollout backend 'vllm' is unavailable: {reason} ({error})") from error
        return VLLMRolloutEngine(model, tokenizer, **kw)
    raise ValueError(f"unknown rollout backend {backend!r}; expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Rollout", "RolloutEngine", "SamplingParams", "make_rollout_engine"]
