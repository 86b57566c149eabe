"""Terminal repetition loops: does a completion end by repeating one n-gram over and over?

Point-wise clipping has been reported to push students into such loops, so evaluation
(`loop_rate` in eval.json) and training (`rollout/loop_rate`) watch for them.

The rule, on the completion's token ids exactly as sampled: a completion *ends in a loop* when,
for some period n with 1 <= n <= `MAX_PERIOD` (16), its last n tokens u occur at least
`MIN_REPEATS` (3) times back to back at its end (ids ends with u·u·…·u, r copies, r >= 3) and the
r copies cover at least `MIN_TOKENS` (24) tokens (r·n >= 24). So a single token needs 24 copies,
a 2-gram 12, an 8-gram to a 16-gram 3. Only whole copies count; a loop cut off mid-copy by the
token limit still counts, since its last n tokens are then a rotation of the repeated unit. A
completion that stopped on its end-of-sequence token ends with that token and so does not end in
a loop: the model got out of it.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_PERIOD = 16
MIN_REPEATS = 3
MIN_TOKENS = 24

__all__ = ["MAX_PERIOD", "MIN_REPEATS", "MIN_TOKENS", "tail_repeats", "ends_in_loop", "loop_rate"]


def tail_repeats(ids: Sequence[int], period: int) -> int:
    """How many whole copies of the last `period` tokens end `ids` back to back (0 when `ids` is
    shorter than one period)."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    ids = list(ids)
    if len(ids) < period:
        return 0
    unit = ids[-period:]
    copies = 1
    while len(ids) >= (copies + 1) * period and ids[-(copies + 1) * period:-copies * period] == unit:
        copies += 1
    return copies


def ends_in_loop(ids: Sequence[int], max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS,
                 min_tokens: int = MIN_TOKENS) -> bool:
    """Whether `ids` ends in a repetition loop (the rule of the module docstring)."""
    for period in range(1, max_period + 1):
        copies = tail_repeats(ids, period)
        if copies >= min_repeats and copies * period >= min_tokens:
            return True
    return False


def loop_rate(completions: Sequence[Sequence[int]]) -> float:
    """The share of `completions` (token id sequences) that end in a loop; 0.0 for none."""
    return sum(ends_in_loop(ids) for ids in completions) / len(completions) if completions else 0.0
