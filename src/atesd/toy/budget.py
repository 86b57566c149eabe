"""A time budget for a toy world built on the user's own problems: its vocabulary and warm-start steps.

`atesd toy build --data FILE --minutes M` trains a tiny model from scratch on any problem file, and
M is the whole command's time on this machine (warm start, then the report's evaluations and
supervised control). The default world's numbers (1,200 steps of 32 examples, a 512-token
vocabulary bound) fit its short arithmetic texts; a wordier task makes every example several times
longer. The build is sized to the data and to this machine:

1. the BPE vocabulary bound grows with the text (more merges → fewer tokens per example): 512 for
   under 1 MB of training text, then 1,024 and 2,048 (`vocabulary_bound`);
2. the tokens per warm-start example are measured on 256 examples of the actual mix (student and
   teacher examples, with the tokenizer trained on the data); an example longer than the preset's
   positions is an error (`data_tokenizer`);
3. steps = the seconds the budget leaves for the warm start / a warm-start step's seconds measured
   on this machine (`atesd.toy.speed`), within [MIN_STEPS, MAX_STEPS] (the default world's count
   is the ceiling) (`warm_start_steps`, `sized`).

Because the steps follow a measurement, the same file and budget can give a few steps more or less
on another machine or another day, hence another cache key; `atesd.experiments.world_build`
therefore also finds a world by the request (file, preset, seed, minutes) that built it.

`RELATIVE_STEP_COST` compares presets for suggestions only (what a larger preset would cost): from
warm-start throughputs measured once on a 2-core AMD EPYC (2 threads, idle), toy-1m ~7,000 tokens/s
(1,200 steps × 32 examples × ~150 tokens in 815 s of the default world's build), toy-5m ~1,500,
toy-test ~40,000.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Sequence

from atesd.data import Problem
from atesd.toy.model import PRESETS, tokenizer_corpus, train_tokenizer
from atesd.toy.warmstart import example_stream

TRAIN_TOKENS_PER_S = {"toy-test": 40_000, "toy-1m": 7_000, "toy-5m": 1_500}
RELATIVE_STEP_COST = {preset: TRAIN_TOKENS_PER_S["toy-1m"] / speed for preset, speed in TRAIN_TOKENS_PER_S.items()}
MIN_STEPS, MAX_STEPS = 100, 1200
LENGTH_SAMPLE = 256  # warm-start examples whose tokens are counted


def vocabulary_bound(train_text_chars: int) -> int:
    """The BPE vocabulary bound for this much training text (item 1 of the module docstring)."""
    if train_text_chars < 1_000_000:
        return 512
    return 1024 if train_text_chars < 4_000_000 else 2048


def data_tokenizer(cfg, problems: Sequence[Problem]):
    """(tokenizer, vocabulary bound, mean tokens per warm-start example) for `cfg` (a ToyWorldConfig
    whose `data` holds `problems`); raises when an example exceeds the preset's positions."""
    texts = list(tokenizer_corpus(problems, cfg.prompts))
    vocab = vocabulary_bound(sum(len(t) for t in texts))
    tokenizer = train_tokenizer(texts, vocab_size=vocab)
    stream = example_stream(problems, tokenizer, cfg.prompts, cfg.warm_start, cfg.seed)
    lengths = [len(e.prompt_ids) + len(e.completion_ids) for e in itertools.islice(stream, LENGTH_SAMPLE)]
    limit = PRESETS[cfg.preset].max_positions
    if max(lengths) > limit:
        raise ValueError(f"{cfg.data}: warm-start examples reach {max(lengths)} tokens (problem + revealed "
                         f"reference + solution), over the {cfg.preset} model's {limit} positions; shorten the "
                         "solutions or use fewer steps per solution")
    return tokenizer, vocab, sum(lengths) / len(lengths)


def warm_start_steps(seconds: float, step_seconds: float) -> int:
    """Steps that fit `seconds` at `step_seconds` each, within [MIN_STEPS, MAX_STEPS]."""
    return max(MIN_STEPS, min(MAX_STEPS, int(seconds / step_seconds)))


def sized(cfg, vocab_size: int, steps: int):
    """`cfg` with this vocabulary bound and warm-start steps (warm-up at most a tenth of them)."""
    warm_start = replace(cfg.warm_start, steps=steps, warmup_steps=min(cfg.warm_start.warmup_steps, steps // 10))
    return replace(cfg, vocab_size=vocab_size, warm_start=warm_start)
