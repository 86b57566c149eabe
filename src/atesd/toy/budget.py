"""A time budget for the warm start of a toy world built on the user's own problems.

`atesd toy build --data FILE` trains a tiny model from scratch on any problem file. The default
world's numbers (1,200 steps of 32 examples, a 512-token vocabulary bound) fit its short arithmetic
texts; a wordier task makes every example several times longer, and the same numbers take hours
on 2 cores. `plan_world(data, minutes)` sizes the build to the data instead:

1. the BPE vocabulary bound grows with the text (more merges → fewer tokens per example): 512 for
   under 1 MB of training text, then 1,024 and 2,048;
2. the tokens per warm-start example are measured on 256 examples of the actual mix (student and
   teacher examples, with the tokenizer trained on the data);
3. steps = the budget's seconds / the seconds per step, within [100, 1,200] (the default world's
   count is the ceiling). A step's seconds grow with the square of the example length (attention
   and padding): the preset's measured throughput holds at the default world's ~150 tokens per
   example and falls in proportion beyond it. Measured on a 2-core AMD EPYC (2 threads, idle):
   toy-1m at ~150 tokens per example 0.68 s per step of 32; at ~374 (the Horner task of
   `benchmarks/horner_data.py`) 4.2 s, where a linear model said 1.7 s.

Everything is a deterministic function of the data and the budget (the throughput is a constant
measured once on a 2-core machine, `TRAIN_TOKENS_PER_S`), so the same file and budget give the
same configuration, hence the same cache key, on any machine; the estimate printed before the build
is in minutes on such a machine.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from atesd.data import load_problems
from atesd.toy.model import PRESETS, tokenizer_corpus, train_tokenizer
from atesd.toy.warmstart import example_stream

# Warm-start training throughput (tokens/s, batch 32, fp32, 2 threads), measured on a 2-core AMD EPYC:
# toy-1m 1,200 steps × 32 examples × ~150 tokens in 815 s of the default world's build.
TRAIN_TOKENS_PER_S = {"toy-test": 40_000, "toy-1m": 7_000, "toy-5m": 1_500}
REFERENCE_TOKENS_PER_EXAMPLE = 150  # the default world's, where TRAIN_TOKENS_PER_S was measured
MIN_STEPS, MAX_STEPS = 100, 1200


@dataclass(frozen=True)
class WorldPlan:
    """What `plan_world` chose, and the estimate it printed."""

    vocab_size: int
    tokens_per_example: float
    steps: int
    estimated_minutes: float

    def describe(self, batch_size: int) -> str:
        return (f"vocabulary ≤ {self.vocab_size}, ~{self.tokens_per_example:.0f} tokens per warm-start example, "
                f"{self.steps} steps of {batch_size}: about {self.estimated_minutes:.0f} min of warm start on 2 CPU cores")


def vocabulary_bound(train_text_chars: int) -> int:
    """The BPE vocabulary bound for this much training text (see the module docstring)."""
    if train_text_chars < 1_000_000:
        return 512
    return 1024 if train_text_chars < 4_000_000 else 2048


def step_seconds_for(preset: str, tokens_per_example: float, batch_size: int) -> float:
    """Seconds of one warm-start step on 2 CPU cores (item 3 of the module docstring): tokens per step
    over the preset's throughput, times the example length over the reference length when longer."""
    slowdown = max(1.0, tokens_per_example / REFERENCE_TOKENS_PER_EXAMPLE)
    return batch_size * tokens_per_example / TRAIN_TOKENS_PER_S[preset] * slowdown


def plan_world(cfg, minutes: float = 15.0) -> tuple[object, WorldPlan]:
    """(cfg with vocab_size and warm_start.steps sized for `cfg.data` and the budget, the plan).
    cfg: a ToyWorldConfig whose `data` names the problem file."""
    if cfg.data is None:
        raise ValueError("plan_world sizes worlds built on a problem file (cfg.data)")
    problems = load_problems(cfg.data)
    texts = list(tokenizer_corpus(problems, cfg.prompts))
    vocab = vocabulary_bound(sum(len(t) for t in texts))
    tokenizer = train_tokenizer(texts, vocab_size=vocab)
    stream = example_stream(problems, tokenizer, cfg.prompts, cfg.warm_start, cfg.seed)
    sample = list(itertools.islice(stream, 256))
    lengths = [len(e.prompt_ids) + len(e.completion_ids) for e in sample]
    per_example = sum(lengths) / len(lengths)
    limit = PRESETS[cfg.preset].max_positions
    if max(lengths) > limit:
        raise ValueError(f"{cfg.data}: warm-start examples reach {max(lengths)} tokens (problem + revealed "
                         f"reference + solution), over the {cfg.preset} model's {limit} positions; shorten the "
                         "solutions or use fewer steps per solution")
    step_seconds = step_seconds_for(cfg.preset, per_example, cfg.warm_start.batch_size)
    steps = max(MIN_STEPS, min(MAX_STEPS, int(minutes * 60 / step_seconds)))
    estimate = steps * step_seconds / 60
    planned = replace(cfg, vocab_size=vocab, warm_start=replace(cfg.warm_start, steps=steps,
                                                                warmup_steps=min(cfg.warm_start.warmup_steps,
                                                                                 steps // 10)))
    return planned, WorldPlan(vocab, per_example, steps, estimate)
