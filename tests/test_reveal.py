"""atesd.reveal: step splitting on real solution layouts, and the reveal invariants as properties."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atesd.answers import extract_boxed
from atesd.reveal import reveal, revealed_step_count, split_steps, withheld

PARAGRAPHS = (
    "Let $x$ be the number of apples. Then $2x + 3 = 11$.\n\n"
    "Subtracting 3 gives $2x = 8$.\n\n"
    "Dividing by 2, $x = 4$. The answer is $\\boxed{4}$."
)


def _without_whitespace(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_split_steps_uses_paragraphs_and_splits_the_boxed_sentence_off_the_last_one():
    steps, final = split_steps(PARAGRAPHS)
    assert steps == [
        "Let $x$ be the number of apples. Then $2x + 3 = 11$.",
        "Subtracting 3 gives $2x = 8$.",
        "Dividing by 2, $x = 4$.",
    ]
    assert final == "The answer is $\\boxed{4}$."


def test_split_steps_falls_back_to_lines():
    steps, final = split_steps("Step one: $a = 1$\nStep two: $b = 2$\nSo $a + b = \\boxed{3}$.")
    assert steps == ["Step one: $a = 1$", "Step two: $b = 2$"]
    assert final == "So $a + b = \\boxed{3}$."


def test_split_steps_falls_back_to_sentences():
    steps, final = split_steps("First, $1 + 1 = 2$. Next, double it! Is it 4? Yes, so $\\boxed{4}$.")
    assert steps == ["First, $1 + 1 = 2$.", "Next, double it!", "Is it 4?"]
    assert final == "Yes, so $\\boxed{4}$."


def test_split_steps_never_cuts_inside_math_or_environments():
    solution = (
        "Expanding, we get\n"
        "\\begin{align*}\n(x+1)^2 &= x^2 + 2x + 1. \\\\\n&= 10.\n\\end{align*}\n"
        "Also $$a = 1.\n b = 2.$$\n"
        "Hence $x = \\boxed{3}$."
    )
    steps, final = split_steps(solution)
    assert steps == [
        "Expanding, we get",
        "\\begin{align*}\n(x+1)^2 &= x^2 + 2x + 1. \\\\\n&= 10.\n\\end{align*}",
        "Also $$a = 1.\n b = 2.$$",
    ]
    assert final == "Hence $x = \\boxed{3}$."


def test_final_sentence_keeps_text_after_the_box():
    steps, final = split_steps("We compute.\n\nSo $\\boxed{7}$. We are done.")
    assert steps == ["We compute."]
    assert final == "So $\\boxed{7}$. We are done."


def test_final_sentence_may_be_display_math_on_its_own_line():
    steps, final = split_steps("Add them.\n\nThis gives\n\\[\\boxed{12}.\\]")
    assert steps == ["Add them.", "This gives"]
    assert final == "\\[\\boxed{12}.\\]"


def test_solution_without_a_box_has_an_empty_final_sentence():
    steps, final = split_steps("One.\n\nTwo.")
    assert (steps, final) == (["One.", "Two."], "")
    assert reveal("One.\n\nTwo.", 0.0) == ""


def test_reveal_ratio_zero_keeps_only_final_answer():
    assert reveal(PARAGRAPHS, 0.0) == "The answer is $\\boxed{4}$."


def test_reveal_keeps_floor_of_ratio_times_steps_and_joins_with_blank_lines():
    assert reveal(PARAGRAPHS, 0.7) == (
        "Let $x$ be the number of apples. Then $2x + 3 = 11$.\n\n"
        "Subtracting 3 gives $2x = 8$.\n\n"
        "The answer is $\\boxed{4}$."
    )
    assert withheld(PARAGRAPHS, 0.7) == "Dividing by 2, $x = 4$.\n\nThe answer is $\\boxed{4}$."


def test_reveal_normalises_crlf_line_endings():
    assert reveal(PARAGRAPHS.replace("\n", "\r\n"), 1.0) == reveal(PARAGRAPHS, 1.0)


@pytest.mark.parametrize(
    ("ratio", "steps", "expected"), [(0.29, 100, 29), (0.7, 10, 7), (0.3, 10, 3), (1 / 3, 3, 1), (0.999, 3, 2)]
)
def test_revealed_step_count_is_robust_to_float_error(ratio, steps, expected):
    assert revealed_step_count(steps, ratio) == expected


@pytest.mark.parametrize(("ratio", "steps", "floor", "nearest"),
                         [(0.9, 1, 0, 1), (0.49, 1, 0, 0), (0.5, 1, 0, 1), (0.74, 2, 1, 1), (0.75, 2, 1, 2),
                          (0.8, 5, 4, 4), (0.9, 5, 4, 5), (0.0, 4, 0, 0), (1.0, 4, 4, 4), (0.29, 100, 29, 29)])
def test_nearest_rounding_gives_full_exposure_to_ratios_near_one_on_short_solutions(ratio, steps, floor, nearest):
    assert revealed_step_count(steps, ratio) == revealed_step_count(steps, ratio, "floor") == floor
    assert revealed_step_count(steps, ratio, "nearest") == nearest


def test_reveal_and_withheld_follow_the_rounding_and_reject_an_unknown_one():
    assert reveal(PARAGRAPHS, 0.9, "nearest") == reveal(PARAGRAPHS, 1.0)  # 2.7 steps of 3 → 3
    assert withheld(PARAGRAPHS, 0.9, "nearest") == "The answer is $\\boxed{4}$."
    assert reveal(PARAGRAPHS, 0.9) == reveal(PARAGRAPHS, 2 / 3)  # the floor: 2 of 3
    with pytest.raises(ValueError, match="rounding"):
        revealed_step_count(3, 0.5, "ceil")


@pytest.mark.parametrize("ratio", [-0.01, 1.0001, math.nan, math.inf, "0.5", None, True, [0.5]])
def test_reveal_rejects_bad_ratios(ratio):
    with pytest.raises(ValueError, match="ratio"):
        reveal(PARAGRAPHS, ratio)
    with pytest.raises(ValueError, match="ratio"):
        withheld(PARAGRAPHS, ratio)


# --- properties -------------------------------------------------------------------------------

_WORD = st.text(alphabet="abcxyz0123456789+-=()", min_size=1, max_size=8)
_SENTENCE = st.lists(_WORD, min_size=1, max_size=5).map(" ".join).map(lambda s: s + ".")
_MATH = _WORD.map(lambda w: f"${w}.$")  # math holding a period: never a split point
_CHUNK = st.one_of(_SENTENCE, _MATH)
_STEP = st.lists(_CHUNK, min_size=1, max_size=3).map(" ".join)
_SEPARATOR = st.sampled_from(["\n\n", "\n", " ", "\n \n", "\r\n\r\n"])


@st.composite
def solutions(draw):
    """Structured solutions (steps, separators, a boxed final sentence, optional tail) mixed with
    arbitrary text that may hold boxes, braces and dollars anywhere."""
    if draw(st.booleans()):
        steps = draw(st.lists(_STEP, min_size=0, max_size=8))
        answer = draw(st.sampled_from(["4", "\\frac{1}{2}", "\\{1, 2\\}", "x^{2}"]))
        template = draw(st.sampled_from(["The answer is $\\boxed{%s}$.", "So \\fbox{%s}", "\\[\\boxed{%s}\\]"]))
        final = template % answer
        tail = draw(st.sampled_from(["", " Done.", "\n\nCheck: it works."]))
        parts = []
        for step in steps:
            parts += [step, draw(_SEPARATOR)]
        return "".join(parts) + final + tail
    awkward = st.sampled_from(["\\boxed{", "}", "$", "\n\n", ". ", "\\boxed{3}", "\\["])
    pieces = st.one_of(st.text(max_size=20), awkward)
    return "".join(draw(st.lists(pieces, max_size=12)))


_RATIO = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _steps_part(revealed: str, final: str) -> str:
    """The revealed text without its trailing final sentence."""
    assert revealed.endswith(final)
    return revealed[: len(revealed) - len(final)].rstrip("\n")


@settings(max_examples=100, deadline=None)
@given(solutions(), _RATIO, _RATIO)
def test_reveal_for_a_smaller_ratio_is_a_step_prefix_of_a_larger_one(solution, ratio_a, ratio_b):
    small, large = sorted((ratio_a, ratio_b))
    steps, final = split_steps(solution)
    k_small, k_large = revealed_step_count(len(steps), small), revealed_step_count(len(steps), large)
    assert k_small <= k_large
    assert reveal(solution, small) == "\n\n".join(steps[:k_small] + ([final] if final else []))
    small_steps = _steps_part(reveal(solution, small), final)
    assert _steps_part(reveal(solution, large), final).startswith(small_steps)


@settings(max_examples=100, deadline=None)
@given(solutions())
def test_reveal_ratio_one_returns_the_whole_solution_modulo_whitespace(solution):
    steps, final = split_steps(solution)
    whole = reveal(solution, 1.0)
    assert whole == "\n\n".join(steps + ([final] if final else []))
    assert _without_whitespace(whole) == _without_whitespace(solution)


@settings(max_examples=100, deadline=None)
@given(solutions())
def test_reveal_ratio_zero_returns_only_the_final_sentence(solution):
    assert reveal(solution, 0.0) == split_steps(solution)[1]


@settings(max_examples=100, deadline=None)
@given(solutions(), _RATIO)
def test_the_boxed_answer_is_never_lost(solution, ratio):
    answer = extract_boxed(solution)
    assert extract_boxed(reveal(solution, ratio)) == answer
    assert extract_boxed(withheld(solution, ratio)) == answer


@settings(max_examples=100, deadline=None)
@given(solutions(), _RATIO)
def test_withheld_and_reveal_partition_the_steps(solution, ratio):
    steps, final = split_steps(solution)
    k = revealed_step_count(len(steps), ratio)
    tail = [final] if final else []
    assert reveal(solution, ratio) == "\n\n".join(steps[:k] + tail)
    assert withheld(solution, ratio) == "\n\n".join(steps[k:] + tail)
    assert all(step and step == step.strip() for step in steps)


@settings(max_examples=60, deadline=None)
@given(solutions(), st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.0 + 1e-12), st.just(math.nan)))
def test_bad_ratios_raise_value_error(solution, ratio):
    with pytest.raises(ValueError):
        reveal(solution, ratio)
    with pytest.raises(ValueError):
        withheld(solution, ratio)
