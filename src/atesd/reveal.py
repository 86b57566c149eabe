"""Teacher exposure: cut a reference solution to its first steps, keeping the final answer.

ATESD (arXiv 2605.11458) shows the teacher a prefix of the reference solution y* = r_1 … r_m,
final: the revealed reference ỹ*_α is the first ⌊α·m⌋ steps followed by the final-answer sentence,
which is always kept (α = 1 is OPSD, arXiv 2601.18734; α = 0 shows only the answer). The
grounding score g_t needs the complement, the steps the teacher was *not* shown (`withheld`).

Where this departs from, or fills in, the paper:

1. The paper does not define a step. Ours: blank-line separated paragraphs; if the body has
   fewer than two, its lines; if fewer than two lines, its sentences (a ``.``, ``!`` or ``?``
   followed by whitespace). No split point is taken inside math (``$…$``, ``$$…$$``, ``\\[…\\]``,
   ``\\(…\\)``), inside ``\\begin{…}…\\end{…}`` or inside braces, so a step never cuts a formula.
2. The final-answer sentence starts after the last paragraph break, line break or sentence end
   that precedes the last ``\\boxed{}``/``\\fbox{}``, and runs to the end of the solution (text
   after the box, such as "We are done.", stays with it). When the last paragraph holds steps and
   the boxed sentence, only the sentence is split off; the steps before it stay steps.
3. The step granularity is chosen on the body (the text before the final sentence), so a
   one-paragraph body still splits into lines or sentences.
4. A solution without any box has final sentence ``""`` and every part is a step. (The data
   loader rejects such solutions, so training never sees this case.)
5. Whitespace normalisation: ``\\r\\n`` and ``\\r`` become ``\\n``; each step and the final
   sentence are stripped; the output joins them with one blank line (``"\\n\\n"``). Ratio 1 thus
   returns the whole solution with the same non-whitespace characters in the same order.
6. ⌊α·m⌋ is computed as ``floor(α·m + 1e-9)`` so that float error (0.29 · 100 =
   28.999999999999996) does not drop a step.
7. Ours, an option (``prompts.reveal_rounding="nearest"``): ⌊α·m + 1/2⌋ instead of ⌊α·m⌋. With
   few steps per solution the floor makes every α < 1 a partial exposure: for m = 2 any α in
   [0.5, 1) shows one step of two, for m = 1 any α < 1 shows none, so a ratio drawn from a Beta
   (always < 1) never gives full exposure. Rounding to the nearest step count gives full exposure
   from α ≥ 1 − 1/(2m) on; α = 1 and α = 0 are the same under both rules.
"""

from __future__ import annotations

import math
import numbers
import re

from atesd.answers import find_boxed

__all__ = ["split_steps", "reveal", "withheld", "revealed_step_count"]

_FLOOR_EPSILON = 1e-9
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")
_LINE_BREAK = re.compile(r"\n\s*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_BEGIN_ENVIRONMENT = re.compile(r"\\begin\s*\{([^{}]*)\}")


def _find_unescaped(text: str, token: str, start: int) -> int:
    """Index of the next ``token`` at or after ``start`` not preceded by a backslash escape."""
    index = start
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text.startswith(token, index):
            return index
        index += 1
    return -1


def _environment_end(text: str, name: str, start: int) -> int:
    """Index just past the ``\\end{name}`` closing an environment opened before ``start``
    (same-name nesting counted), or -1 when it is never closed."""
    opener = re.compile(r"\\(begin|end)\s*\{" + re.escape(name) + r"\}")
    depth = 1
    for match in opener.finditer(text, start):
        depth += 1 if match.group(1) == "begin" else -1
        if depth == 0:
            return match.end()
    return -1


def _protected(text: str) -> list[bool]:
    """For each character, whether a split point there would cut math, an environment or a
    brace group (departure 1). Unclosed delimiters protect nothing: a lone ``$`` is a dollar."""
    mask = [False] * len(text)
    depth = 0
    index = 0
    while index < len(text):
        region_end = -1
        if text.startswith("$$", index):
            close = _find_unescaped(text, "$$", index + 2)
            region_end = close + 2 if close != -1 else -1
        elif text[index] == "$":
            close = _find_unescaped(text, "$", index + 1)
            region_end = close + 1 if close != -1 else -1
        elif text.startswith("\\[", index) or text.startswith("\\(", index):
            close = text.find("\\]" if text[index + 1] == "[" else "\\)", index + 2)
            region_end = close + 2 if close != -1 else -1
        elif text.startswith("\\begin", index):
            begin = _BEGIN_ENVIRONMENT.match(text, index)
            if begin is not None:
                region_end = _environment_end(text, begin.group(1), begin.end())
        if region_end != -1:
            mask[index:region_end] = [True] * (region_end - index)
            index = region_end
            continue
        width = 2 if text[index] == "\\" else 1  # an escaped character never opens or closes
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth = max(0, depth - 1)
        if depth > 0 or text[index] == "}":
            mask[index : index + width] = [True] * len(mask[index : index + width])
        index += width
    return mask


def _separators(text: str, mask: list[bool], pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of ``pattern`` matches usable as split points: not inside protected text. A sentence
    break is judged by its punctuation mark, the others by their first newline."""
    spans = []
    for match in pattern.finditer(text):
        anchor = match.start() - 1 if pattern is _SENTENCE_BREAK else match.start()
        if anchor >= 0 and not mask[anchor]:
            spans.append(match.span())
    return spans


def _pieces(text: str, separators: list[tuple[int, int]]) -> list[str]:
    """The stripped, non-empty text between separator spans."""
    pieces, start = [], 0
    for separator_start, separator_end in separators:
        pieces.append(text[start:separator_start])
        start = separator_end
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if piece.strip()]


def split_steps(solution: str) -> tuple[list[str], str]:
    """Split a reference solution y* into its steps r_1 … r_m and its final-answer sentence.

    Returns ``(steps, final)``: steps stripped and non-empty; ``final`` is the sentence holding
    the last box through the end of the text (``""`` without a box). See the module docstring
    for what a step is.
    """
    if not isinstance(solution, str):
        raise TypeError(f"split_steps: solution must be a str, got {type(solution).__name__}")
    text = solution.replace("\r\n", "\n").replace("\r", "\n").strip()
    mask = _protected(text)
    box = find_boxed(text)
    final_start = len(text)
    if box is not None:
        breaks = [
            end
            for pattern in (_PARAGRAPH_BREAK, _LINE_BREAK, _SENTENCE_BREAK)
            for _, end in _separators(text, mask, pattern)
            if end <= box.start
        ]
        final_start = max(breaks, default=0)
    body, body_mask = text[:final_start], mask[:final_start]
    steps: list[str] = []
    for pattern in (_PARAGRAPH_BREAK, _LINE_BREAK, _SENTENCE_BREAK):
        steps = _pieces(body, _separators(body, body_mask, pattern))
        if len(steps) >= 2:
            break
    return steps, text[final_start:].strip()


def _checked_ratio(ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"reveal ratio must be a number in [0, 1], got {ratio!r}")
    value = float(ratio)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"reveal ratio must be in [0, 1], got {ratio!r}")
    return value


ROUNDINGS = ("floor", "nearest")


def revealed_step_count(step_count: int, ratio: float, rounding: str = "floor") -> int:
    """⌊α·m⌋ for m = ``step_count`` (departure 6), or ⌊α·m + 1/2⌋ with rounding="nearest" (7).
    Raises ValueError for α outside [0, 1] or an unknown rounding."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"reveal rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    offset = 0.5 if rounding == "nearest" else 0.0
    return min(step_count, math.floor(_checked_ratio(ratio) * step_count + offset + _FLOOR_EPSILON))


def _joined(parts: list[str]) -> str:
    return "\n\n".join(part for part in parts if part)


def reveal(solution: str, ratio: float, rounding: str = "floor") -> str:
    """ỹ*_α: the first ⌊α·m⌋ steps, then the final-answer sentence, joined by blank lines."""
    steps, final = split_steps(solution)
    return _joined(steps[: revealed_step_count(len(steps), ratio, rounding)] + [final])


def withheld(solution: str, ratio: float, rounding: str = "floor") -> str:
    """The steps ``reveal`` leaves out (r_{⌊α·m⌋+1} … r_m), then the final-answer sentence.

    The teacher's log-probability of this text is the grounding score g_t."""
    steps, final = split_steps(solution)
    return _joined(steps[revealed_step_count(len(steps), ratio, rounding) :] + [final])
