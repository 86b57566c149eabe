"""Checks on loaded problems that do not reject a row outright: answers that disagree with their
solution's box (a warning), and prompts too long to use (dropped with a warning).

Both name every row they concern in one warning, as a list capped at `LIST_LIMIT` entries followed
by "... and K more". `drop_long_prompts` needs the tokenizer, so it runs after the tokenizer loads
and before any model does (`atesd.run`, `atesd.evaluate.run_eval`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from atesd.answers import extract_boxed, is_correct
from atesd.data_sources import DataError
from atesd.prompts import PromptConfig, student_prompt

__all__ = ["LIST_LIMIT", "capped", "answer_disagreements", "warn_answer_disagreements", "drop_long_prompts"]

logger = logging.getLogger(__name__)

LIST_LIMIT = 20


def capped(entries: Sequence[str], limit: int = LIST_LIMIT) -> list[str]:
    """The first `limit` entries, then one "... and K more" entry when there are more."""
    shown = list(entries[:limit])
    if len(entries) > limit:
        shown.append(f"... and {len(entries) - limit} more")
    return shown


def answer_disagreements(located: Iterable[tuple[str, object]]) -> list[str]:
    """One entry per problem (given as (location, Problem)) whose `answer` differs from the content
    of its solution's last ``\\boxed{}``: "LOCATION: answer '0.5' but the solution's last box is
    '2'". Equal means `atesd.answers.is_correct(solution, answer)`: normalised strings, then
    math-verify (so ``0.5`` and ``\\frac{1}{2}`` agree). A solution without a box (an
    evaluation-only set) has nothing to disagree with."""
    found = []
    for location, problem in located:
        boxed = extract_boxed(problem.solution)
        if boxed and not is_correct(problem.solution, problem.answer):
            found.append(f"{location}: answer {problem.answer!r:.60} but the solution's last box is {boxed!r:.60}")
    return found


def warn_answer_disagreements(label: str, located: Iterable[tuple[str, object]]) -> list[str]:
    """`answer_disagreements`, logged as one warning (the list capped); returns them all."""
    found = answer_disagreements(located)
    if found:
        listing = "".join(f"\n  {entry}" for entry in capped(found))
        logger.warning("%s: %d row(s) give an answer that disagrees with their solution's last \\boxed{} "
                       "(kept; the given answer is the gold one):%s", label, len(found), listing)
    return found


def drop_long_prompts(problems: Sequence, tokenizer, prompt_cfg: PromptConfig, max_prompt_tokens: int | None,
                      label: str) -> list:
    """The problems whose student prompt (`atesd.prompts.student_prompt`, the token ids a rollout
    starts from) has at most `max_prompt_tokens` tokens, in order; None keeps
    all. The dropped ones are named in one warning (id and length). Raises DataError, one line,
    when none is left."""
    if max_prompt_tokens is None:
        return list(problems)
    kept, dropped = [], []
    for problem in problems:
        length = len(student_prompt(tokenizer, problem.problem, prompt_cfg))
        if length <= max_prompt_tokens:
            kept.append(problem)
        else:
            dropped.append(f"id {problem.id!r}: {length} tokens")
    if dropped and not kept:
        raise DataError(f"{label}: no usable rows: all {len(dropped)} prompts are longer than max_prompt_tokens="
                        f"{max_prompt_tokens} (e.g. {dropped[0]}); raise max_prompt_tokens or shorten the problems")
    if dropped:
        listing = "".join(f"\n  {entry}" for entry in capped(dropped))
        logger.warning("%s: dropped %d row(s) whose student prompt is longer than max_prompt_tokens=%d; kept %d:%s",
                       label, len(dropped), max_prompt_tokens, len(kept), listing)
    return kept
