"""atesd.answers on real LaTeX with the real math-verify: box extraction, equivalence, pooled scoring."""

import time

import pytest

from atesd.answers import extract_boxed, find_boxed, is_correct, score_batch

# A gold answer whose check runs for minutes: SymPy evaluates 1000000! to compare it with 1.
SLOW_GOLD = "1000000!"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is $\boxed{5}$.", "5"),
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"\boxed{\left\{ x : x^{2} > 1 \right\}}", r"\left\{ x : x^{2} > 1 \right\}"),
        (r"first \boxed{1}, then \boxed{2}, finally \boxed{3}.", "3"),
        (r"so \fbox{7}", "7"),
        (r"mixed \fbox{7} then \boxed{8}", "8"),
        (r"\boxed 5$ is it", "5"),
        (r"\boxed{ 42 }", "42"),
        (r"\boxed{a} then an unclosed \boxed{b", "a"),
    ],
)
def test_extract_boxed_returns_last_box_content_with_nested_braces(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text", ["no box at all", r"\boxedx{3}", r"\boxed{never closed", ""])
def test_extract_boxed_returns_none_without_a_box(text):
    assert extract_boxed(text) is None


def test_find_boxed_span_covers_the_whole_command():
    text = r"so $\boxed{\frac{1}{2}}$."
    box = find_boxed(text)
    assert text[box.start : box.end] == r"\boxed{\frac{1}{2}}"


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac12", r"\frac{1}{2}"),
        (r"\frac{1}{2}", "0.5"),
        (r"\sqrt{8}", r"2\sqrt{2}"),
        (r"\frac{\sqrt3}{2}", r"\dfrac{\sqrt{3}}{2}"),
        (r"\{2, 1\}", r"\{1,2\}"),
        (r"(-\infty,3)", r"(-\infty, 3)"),
        (r"\left(1,2\right)", "(1,2)"),
        ("1+x^2", "x^2+1"),
        ("90", r"90^\circ"),
        ("Monday", r"\text{Monday}"),
        ("3", "x=3"),
        (r"10\%", "0.1"),
        ("0.1", r"10\%"),
    ],
)
def test_is_correct_accepts_equivalent_latex(prediction, gold):
    assert is_correct(f"Work... so the answer is $\\boxed{{{prediction}}}$.", gold)


@pytest.mark.parametrize(
    ("prediction", "gold"),
    [
        ("0.6", r"\frac{1}{2}"),
        (r"\sqrt{7}", r"2\sqrt{2}"),
        ("[0,1]", "(0,1]"),
        ("(2,1)", "(1,2)"),
        (r"\{1,3\}", r"\{1,2\}"),
        ("B", "A"),
    ],
)
def test_is_correct_rejects_different_answers(prediction, gold):
    assert not is_correct(f"$\\boxed{{{prediction}}}$", gold)


def test_is_correct_judges_a_percentage_equal_to_its_value_and_its_number():
    # math-verify's documented behaviour, kept on purpose (answers.py departure 4).
    assert is_correct(r"\boxed{10\%}", "0.1")
    assert is_correct(r"\boxed{10}", r"10\%")


def test_is_correct_uses_the_last_box_only():
    assert is_correct(r"maybe \boxed{3}? no: \boxed{4}", "4")
    assert not is_correct(r"\boxed{4} was wrong, it is \boxed{3}", "4")


def test_is_correct_reads_fbox():
    assert is_correct(r"\fbox{\frac{1}{2}}", "0.5")


def test_is_correct_is_false_without_a_box_even_if_the_text_ends_with_the_answer():
    assert not is_correct("The answer is 4", "4")
    assert not is_correct(r"\boxed{}", "4")


def test_is_correct_accepts_a_gold_that_still_holds_its_box():
    assert is_correct(r"\boxed{6}", r"The total is $\boxed{6}$.")


def test_string_fallback_decides_answers_math_verify_cannot_parse():
    # math-verify cannot turn `\textsc{...}` into an expression; it compares the raw strings,
    # which differ by the period. Only the normalised-string path matches them.
    assert is_correct(r"\boxed{\textsc{Yes}.}", r"\textsc{Yes}")
    assert is_correct(r"\boxed{\varnothing}", r"\emptyset")
    assert not is_correct(r"\boxed{\textsc{No}}", r"\textsc{Yes}")


def test_is_correct_counts_a_judgement_over_the_time_limit_as_wrong():
    started = time.monotonic()
    assert not is_correct(r"\boxed{1}", SLOW_GOLD, timeout_s=0.5)
    assert time.monotonic() - started < 5


def _batch():
    items = [
        (r"\boxed{0.5}", r"\frac{1}{2}", True),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", True),
        (r"\boxed{3}", "4", False),
        ("no box here: 4", "4", False),
        (r"\boxed{\{1,2\}}", r"\{2,1\}", True),
        (r"\fbox{x^2+1}", "1+x^2", True),
        (r"\boxed{(0,1)}", "[0,1]", False),
        (r"\boxed{\textsc{Yes}}", r"\textsc{Yes}", True),
        (r"\boxed{1} then \boxed{2}", "1", False),
        (r"\boxed{\dfrac{3}{4}}", "0.75", True),
    ]
    return items * 2


def test_score_batch_in_process_matches_is_correct():
    items = _batch()
    scores = score_batch([c for c, _, _ in items], [g for _, g, _ in items], workers=0)
    assert scores == [expected for _, _, expected in items]


def test_score_batch_with_a_pool_of_two_scores_twenty_items_and_bounds_a_slow_one():
    items = _batch()
    items[7] = (r"\boxed{1}", SLOW_GOLD, False)
    started = time.monotonic()
    scores = score_batch([c for c, _, _ in items], [g for _, g, _ in items], timeout_s=1.0, workers=2)
    assert scores == [expected for _, _, expected in items]
    assert time.monotonic() - started < 15  # pool start-up ~2 s + one 1 s timeout, never minutes


def test_score_batch_rejects_mismatched_lengths_and_bad_arguments():
    with pytest.raises(ValueError, match="golds"):
        score_batch([r"\boxed{1}"], [], workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        score_batch([r"\boxed{1}"], ["1"], timeout_s=0, workers=0)
    with pytest.raises(ValueError, match="workers"):
        score_batch([r"\boxed{1}"], ["1"], workers=-1)


def test_score_batch_of_nothing_is_empty():
    assert score_batch([], [], workers=2) == []


def test_is_correct_restores_a_timer_armed_by_someone_else():
    import signal

    fired = []

    def handler(*_):
        fired.append(True)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert is_correct(r"\boxed{\sqrt{8}}", r"2\sqrt{2}", timeout_s=5.0)
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        assert 0 < remaining <= 30.0
        assert signal.getsignal(signal.SIGALRM) is handler and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
