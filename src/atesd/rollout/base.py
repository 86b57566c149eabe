"""The one interface every rollout backend implements.

A backend turns prompt token ids into sampled completions and keeps its weights in sync with the
policy being trained. `hf.py` uses plain `transformers` generation (CPU, small GPUs); `vllm.py`
(extra `vllm`) uses a colocated vLLM engine. Nothing else in atesd imports a backend directly:
`make_rollout_engine` is the one place the choice is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class SamplingParams:
    """Generation options shared by every backend.

    temperature 0 means greedy decoding; top_k 0 and top_p 1.0 disable those filters.
    seed makes a call reproducible (the loop derives it from the run seed and the step).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Rollout:
    """One sampled completion.

    prompt_ids: the prompt exactly as given (no padding).
    completion_ids: the sampled tokens, EOS included when generation stopped on it, no padding.
    text: the completion decoded without special tokens.
    logprobs: log-probability of each sampled token under the sampling distribution's
        temperature-scaled softmax (before top-k/top-p filtering), aligned with completion_ids.
    truncated: True when max_new_tokens was reached without an EOS.
    """

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]
    truncated: bool


class RolloutEngine(Protocol):
    """Samples completions for prompts given as token ids."""

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Rollout]:
        """One completion per prompt, in order (repeat a prompt to sample it several times)."""
        ...

    def sync_weights(self, model) -> None:
        """Make the engine sample from `model`'s current weights (after an optimizer step)."""
        ...

    def sleep(self) -> None:
        """Release what the engine holds between rollout phases (vLLM's sleep mode; the next
        `generate` or `sync_weights` brings it back); a no-op where there is nothing to release."""
        ...

    def close(self) -> None:
        """Release the engine for good (the training run calls it once, at the end)."""
        ...
