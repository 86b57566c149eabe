"""How fast this machine runs the pieces of `atesd toy build`, measured in-process before the work.

A build's time is a few phases, each a count of units times a unit cost measured here, on this
machine, now, with the real tokenizer, the real problems and a model of the world's shape (so a
shared or slower CPU is measured as it is, not assumed to be the 2-core machine the defaults were
tuned on):

- a supervised step (`atesd.toy.warmstart.train_supervised`: forward, backward, AdamW on one batch
  of the warm-start mix, or of student examples for the report's supervised control): the mean of a
  few timed steps after one untimed step, on a copy of the model;
- generation by the lean decoder (`atesd.rollout.lean`): prefill seconds per prompt token and a
  decoding step's seconds, modelled as c(B, n) = a + b·B + d·B·n for B rows attending to n
  positions (the KV cache grows with the prompt and the completion), fitted from three timed calls
  on real prompts with stopping off;
- scoring: math-verify's seconds per completion.

An evaluation's generation time is then replayed call by call (`DecodeCost.call_seconds`) from the
token lengths of the reference solutions (a warm-started model writes solutions about as long as
its references) with the decoder's own rule of dropping finished rows once half have stopped.
"""

from __future__ import annotations

import copy
import time
from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import torch

from atesd.answers import score_batch
from atesd.prompts import reference_completion
from atesd.rollout import lean
from atesd.rollout.base import SamplingParams
from atesd.toy.warmstart import Example, WarmStartConfig, train_supervised

CALIBRATION_TOKENS = 16  # decoding steps per timed call


@dataclass(frozen=True)
class DecodeCost:
    """Seconds of the lean decoder on this machine.

    prefill_per_token: the prompt pass, per (padded) prompt token.
    step_fixed, step_per_row, step_per_row_position: one decoding step for B rows attending to n
        positions costs step_fixed + step_per_row·B + step_per_row_position·B·n.
    """

    prefill_per_token: float
    step_fixed: float
    step_per_row: float
    step_per_row_position: float

    def step_seconds(self, rows: int, positions: int) -> float:
        return self.step_fixed + rows * (self.step_per_row + self.step_per_row_position * positions)

    def call_seconds(self, prompt_lengths: Sequence[int], completion_lengths: Sequence[int],
                     max_new_tokens: int) -> float:
        """One generation call: prefill of the left-padded prompts, then one step per new token
        until every row has stopped, the rows kept as `atesd.rollout.lean.LeanDecoder.sample`
        keeps them (finished rows are dropped once at most half of the kept rows still run)."""
        width = max(prompt_lengths)
        ends = sorted(min(max(1, n), max_new_tokens) for n in completion_lengths)
        seconds = self.prefill_per_token * width * len(ends)
        kept = len(ends)
        for step in range(1, ends[-1]):  # step s feeds the token drawn at s − 1
            running = len(ends) - bisect_right(ends, step)
            if running <= kept // 2:
                kept = running
            seconds += self.step_seconds(kept, width + step)
        return seconds

    def generation_seconds(self, prompt_lengths: Sequence[int], completion_lengths: Sequence[int],
                           batch_size: int, max_new_tokens: int) -> float:
        """Calls of `batch_size` rows in order, as `atesd.evaluate.evaluate` and the HF engine cut them."""
        return sum(self.call_seconds(prompt_lengths[start:start + batch_size],
                                     completion_lengths[start:start + batch_size], max_new_tokens)
                   for start in range(0, len(prompt_lengths), batch_size))


def supervised_step_seconds(model, tokenizer, examples: Iterator[Example], cfg: WarmStartConfig, seed: int,
                            threads: int | None = None, steps: int = 4) -> float:
    """Mean seconds of one `train_supervised` step of `cfg`'s batch on `examples`, timed over `steps`
    steps after one untimed step, on a copy of `model` (the model itself is left as it is)."""
    trial = copy.deepcopy(model)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        one = replace(cfg, steps=1, warmup_steps=1)
        train_supervised(trial, tokenizer, examples, one, seed, progress=False)
        started = time.perf_counter()
        train_supervised(trial, tokenizer, examples, replace(one, steps=steps), seed, progress=False)
        return (time.perf_counter() - started) / steps
    finally:
        torch.set_num_threads(before)


def _timed_sample(decoder: lean.LeanDecoder, prompts: Sequence[Sequence[int]], new_tokens: int, pad_id: int) -> float:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, seed=0)
    started = time.perf_counter()
    decoder.sample(prompts, params, stop_ids=(), pad_id=pad_id, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - started


def _decode_timing(decoder, prompts, pad_id) -> tuple[float, float]:
    """(prefill seconds, seconds per decoding step) of one call on `prompts`."""
    prefill = _timed_sample(decoder, prompts, 1, pad_id)
    steps = (_timed_sample(decoder, prompts, 1 + CALIBRATION_TOKENS, pad_id) - prefill) / CALIBRATION_TOKENS
    return prefill, max(steps, 0.0)


def measure_decoding(model, tokenizer, short_prompts: Sequence[Sequence[int]], long_prompts: Sequence[Sequence[int]],
                     batch_size: int) -> DecodeCost:
    """Fit `DecodeCost` from timed calls of `batch_size` short prompts, a quarter as many short
    prompts, and `batch_size` long prompts (e.g. student prompts and full-reference teacher prompts)."""
    if not lean.supports(model):
        raise ValueError(f"timing covers the lean decoder of toy models, not {type(model).__name__}")
    decoder = lean.LeanDecoder(model.eval())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    full = [short_prompts[i % len(short_prompts)] for i in range(batch_size)]
    few = full[: max(1, batch_size // 4)]
    longer = [long_prompts[i % len(long_prompts)] for i in range(batch_size)]
    _timed_sample(decoder, few, 2, pad_id)  # untimed: first-call allocations
    prefill, step_full = _decode_timing(decoder, full, pad_id)
    _, step_few = _decode_timing(decoder, few, pad_id)
    _, step_long = _decode_timing(decoder, longer, pad_id)
    width_short = max(len(p) for p in full) + CALIBRATION_TOKENS // 2
    width_long = max(len(p) for p in longer) + CALIBRATION_TOKENS // 2
    per_row_position = max(0.0, (step_long - step_full) / (len(full) * max(1, width_long - width_short)))
    per_row = max(0.0, (step_full - step_few) / (len(full) - len(few)) - per_row_position * width_short)
    fixed = max(0.0, step_full - len(full) * (per_row + per_row_position * width_short))
    return DecodeCost(prefill / (len(full) * max(len(p) for p in full)), fixed, per_row, per_row_position)


def scoring_seconds(problems: Sequence, tokenizer, n: int = 64) -> float:
    """math-verify's seconds per completion, timed on the reference solutions of (up to n) problems."""
    sample = list(problems[:n])
    started = time.perf_counter()
    score_batch([reference_completion(p.solution, tokenizer) for p in sample], [p.answer for p in sample], workers=0)
    return (time.perf_counter() - started) / max(1, len(sample))
