"""atesd.loops: the terminal repetition-loop rule on hand-made token sequences."""

import pytest

from atesd.loops import ends_in_loop, loop_rate, tail_repeats

PREFIX = list(range(100, 140))  # 40 distinct tokens: no repetition of their own
EOS = 0


def test_tail_repeats_counts_whole_copies_of_the_last_n_tokens():
    assert tail_repeats([9, 1, 2, 1, 2, 1, 2], 2) == 3
    assert tail_repeats([1, 2, 1, 2, 1, 2], 2) == 3
    assert tail_repeats([1, 2, 3], 2) == 1
    assert tail_repeats([1], 2) == 0
    assert tail_repeats([7] * 5, 1) == 5
    with pytest.raises(ValueError, match="period"):
        tail_repeats([1], 0)


@pytest.mark.parametrize("tail", [
    [5] * 24,                        # one token, 24 times
    [1, 2] * 12,                     # a 2-gram, 12 times (24 tokens)
    list(range(1, 9)) * 3,           # an 8-gram, 3 times (24 tokens)
    list(range(1, 17)) * 3,          # a 16-gram, 3 times (48 tokens)
    list(range(1, 6)) * 6 + [1, 2],  # a 5-gram cut off mid-copy by the token limit
    [3, 4, 3] * 8,                   # a unit that is itself not primitive-looking: period 3
])
def test_completions_ending_in_a_repeated_ngram_end_in_a_loop(tail):
    assert ends_in_loop(PREFIX + tail)
    assert ends_in_loop(tail)


@pytest.mark.parametrize("tail", [
    [5] * 23,                        # one token 23 times: under 24 tokens
    [1, 2] * 11,                     # 22 tokens
    list(range(1, 13)) * 2,          # a 12-gram twice: 24 tokens but only 2 copies
    list(range(1, 18)) * 3,          # a 17-gram: longer than the longest period, 16
    [1, 2] * 20 + [EOS],             # stopped on EOS after repeating: the model got out
    [5] * 30 + PREFIX,               # a loop in the middle, then fresh text
    [],                              # nothing at all
])
def test_completions_that_do_not_end_in_a_loop(tail):
    assert not ends_in_loop(PREFIX + tail)


def test_loop_rate_is_the_share_of_completions_ending_in_a_loop():
    assert loop_rate([PREFIX + [5] * 24, PREFIX, PREFIX + [1, 2] * 12, [EOS]]) == 0.5
    assert loop_rate([]) == 0.0
