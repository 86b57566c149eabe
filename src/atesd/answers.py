"""Final answers: find the last ``\\boxed{}``, judge it against the gold answer, score many at once.

Correctness is judged by math-verify (``verify(parse(gold), parse(prediction))``, gold first, as
its documentation asks), which knows that ``\\frac{1}{2}``, ``0.5`` and ``\\dfrac12`` are one number
and that ``2\\sqrt{2} = \\sqrt{8}``. Neither ATESD (arXiv 2605.11458) nor OPSD (arXiv 2601.18734)
trains on a reward; this module serves evaluation and data checks only.

Where this departs from a plain math-verify call:

1. Only the content of the completion's *last* box is judged (``\\boxed{}`` or ``\\fbox{}``); a
   completion without a box is wrong, whatever else it says. math-verify alone would also accept
   an unboxed answer at the end of the text.
2. Before math-verify, the two answers are compared as normalised strings (spaces, ``\\left``/
   ``\\right``, thin spaces, ``\\text{}``, ``^\\circ``, a trailing period and ``\\dfrac`` removed or
   rewritten); equal strings are correct at once. This is also the fallback for answers
   math-verify cannot parse (it then returns no expression, and the result stays False unless
   the normalised strings matched).
3. math-verify's own time limit uses ``signal.alarm`` and fails outside the main thread, so it is
   switched off (``parsing_timeout=None``, ``timeout_seconds=None``) and this module bounds each
   judgement itself, with a repeating interval timer in the main thread of whichever process
   judges. An answer that runs past the limit counts as wrong.
4. math-verify judges ``10\\%`` equal to ``0.1`` and also to ``10`` (a percentage matches both its
   value and its number). We keep its judgement.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["BoxedAnswer", "find_boxed", "extract_boxed", "is_correct", "score_batch"]

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_T = TypeVar("_T")


@dataclass(frozen=True)
class BoxedAnswer:
    """One ``\\boxed{...}`` in a text: its content (stripped) and the span ``text[start:end]`` of
    the whole command, from the backslash to the closing brace."""

    content: str
    start: int
    end: int


def _box_at(text: str, match: re.Match[str]) -> BoxedAnswer | None:
    """Parse the box whose command ``match`` found: ``\\boxed{...}`` with nested braces, or the
    brace-less ``\\boxed 5`` (the argument runs to the next space or ``$``). None if unclosed."""
    position = match.end()
    while position < len(text) and text[position] in " \t":
        position += 1
    if position < len(text) and text[position] == "{":
        depth = 0
        index = position
        while index < len(text):
            char = text[index]
            if char == "\\":
                index += 2  # `\{`, `\}` and `\\` are literal characters, not grouping braces
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return BoxedAnswer(text[position + 1 : index].strip(), match.start(), index + 1)
            index += 1
        return None
    if position == match.end():
        return None  # `\boxed` directly followed by a non-letter that is not a brace or a space
    argument = re.match(r"[^\s$]+", text[position:])
    if argument is None:
        return None
    return BoxedAnswer(argument.group(0), match.start(), position + argument.end())


def find_boxed(text: str) -> BoxedAnswer | None:
    """The last well-formed ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (by start position), or
    None. An unclosed box is skipped and the one before it is tried."""
    for match in reversed(list(_BOX_COMMAND.finditer(text))):
        box = _box_at(text, match)
        if box is not None:
            return box
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` or ``\\fbox{}`` in ``text`` (nested braces kept, outer
    spaces stripped), or None when there is none. ``\\boxed 5`` gives ``"5"``."""
    box = find_boxed(text)
    return None if box is None else box.content


_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;:]|\\quad|\\qquad|~|\\displaystyle|\\left|\\right")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")


def _normalised(answer: str) -> str:
    """A canonical string for the fallback comparison (departure 2 in the module docstring)."""
    text = answer.strip().strip("$")
    text = _TEXT_COMMANDS.sub(r"\1", text)
    text = _SPACING.sub("", text)
    text = _DEGREES.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("\\varnothing", "\\emptyset")
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".")


def _math_verify_equal(gold: str, prediction: str) -> bool:
    """math-verify's judgement with its own (signal-based) time limits switched off."""
    from math_verify import parse, verify  # imported lazily: `import atesd.reveal` stays light

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    prediction_parsed = parse(f"${prediction}$", parsing_timeout=None)
    if not gold_parsed or not prediction_parsed:
        return False
    return verify(gold_parsed, prediction_parsed, timeout_seconds=None)


class _JudgementTimeout(BaseException):
    """Raised by the interval timer. A BaseException, so that math-verify's and SymPy's
    ``except Exception`` blocks cannot swallow it and keep computing."""


def _raise_timeout(signum: int, frame: object) -> None:
    raise _JudgementTimeout


def _within_time_limit(function: Callable[[], _T], timeout_s: float | None) -> _T:
    """Run ``function()``; raise _JudgementTimeout once ``timeout_s`` seconds have passed.

    The timer repeats every 50 ms after the first expiry so that a handler that catches even
    BaseException somewhere deep in SymPy is interrupted again. A timer that was already armed
    (pytest-timeout, a caller's own limit) is re-armed afterwards with its remaining time.
    Signals only reach the main thread: elsewhere (or with ``timeout_s=None``) the function runs
    without a limit.
    """
    if timeout_s is None or threading.current_thread() is not threading.main_thread():
        return function()
    previous_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    started = time.monotonic()
    previous_delay, previous_interval = 0.0, 0.0
    try:
        previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s, 0.05)
        try:
            return function()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:  # someone else's timer (pytest-timeout, a caller's own limit)
            remaining = previous_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-6), previous_interval)


def is_correct(completion: str, gold: str, timeout_s: float | None = 5.0) -> bool:
    """Whether the last boxed answer of ``completion`` equals ``gold``.

    ``gold`` is the reference answer itself (``Problem.answer``, e.g. ``"\\frac{1}{2}"``); a gold
    string that holds a box is reduced to its last box's content. A completion without a box, an
    empty box, or a judgement that runs past ``timeout_s`` seconds (main thread only, see
    ``_within_time_limit``) is wrong.
    """
    prediction = extract_boxed(completion)
    gold_box = extract_boxed(gold)
    gold_answer = (gold_box if gold_box is not None else gold).strip()
    if not prediction or not gold_answer:
        return False
    if _normalised(prediction) == _normalised(gold_answer):
        return True
    import math_verify  # noqa: F401  (the first import takes ~1 s: not inside the time limit)

    try:
        return _within_time_limit(lambda: _math_verify_equal(gold_answer, prediction), timeout_s)
    except _JudgementTimeout:
        return False


def _judge_in_worker(completion: str, gold: str, timeout_s: float) -> bool:
    """Pool task: pool workers run tasks in their main thread, so the timer applies there."""
    return is_correct(completion, gold, timeout_s=timeout_s)


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver where available: workers fork from a clean server process, never from a
    parent that may hold torch or CUDA threads (fork from a threaded process can deadlock, and
    Python 3.12+ warns about it). Elsewhere spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def score_batch(
    completions: Sequence[str],
    golds: Sequence[str],
    timeout_s: float = 5.0,
    workers: int | None = None,
) -> list[bool]:
    """``[is_correct(c, g) for c, g in zip(completions, golds)]``, in parallel and time-bounded.

    Args:
        completions: model outputs, one per item.
        golds: reference answers, same length.
        timeout_s: time limit per item; an item over it counts False and the batch goes on.
        workers: processes in the pool; None → ``min(2, os.cpu_count())``; 0 → judge in this
            process (no start-up cost; the right choice for a handful of items and in tests).

    The pool is created for the call and closed after it (start-up about 1-2 s: each worker
    imports math-verify and SymPy). Workers start from a forkserver, which imports the calling
    script as ``__mp_main__``: a script that calls this needs the usual
    ``if __name__ == "__main__":`` guard. Each worker bounds every item with its own timer. As a last
    resort against a computation no signal can interrupt (a long C-level SymPy call), the parent
    waits at most ``timeout_s * ceil(n / workers) + 30`` s in all, then kills the pool; items
    without a result by then count False.
    """
    if len(completions) != len(golds):
        raise ValueError(
            f"score_batch: {len(completions)} completions but {len(golds)} golds; pass one gold per completion"
        )
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"score_batch: timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"score_batch: workers must be an int >= 0 (0 = in-process), got {workers!r}")
    if workers == 0 or not completions:
        return [is_correct(c, g, timeout_s=timeout_s) for c, g in zip(completions, golds)]

    workers = min(workers, len(completions))
    deadline = time.monotonic() + timeout_s * math.ceil(len(completions) / workers) + 30.0
    results: list[bool] = []
    with _pool_context().Pool(processes=workers) as pool:  # __exit__ terminates the workers
        pending = [
            pool.apply_async(_judge_in_worker, (completion, gold, timeout_s))
            for completion, gold in zip(completions, golds)
        ]
        for item in pending:
            try:
                results.append(bool(item.get(timeout=max(0.0, deadline - time.monotonic()))))
            except multiprocessing.TimeoutError:
                results.append(False)
    return results


class _DropDisabledTimeoutNotice(logging.Filter):
    """math-verify logs a one-time warning when its timeout is disabled, telling the caller to
    bound time itself; this module does (departure 3), so that one notice is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger_name).addFilter(_DropDisabledTimeoutNotice())
