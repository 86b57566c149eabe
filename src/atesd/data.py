"""Problem records: load them from local files or the Hugging Face hub, validate, write them back.

A ``Problem`` is one training or evaluation item: the problem text x, its reference solution y*
(reasoning steps, then a final sentence with ``\\boxed{answer}``, as ATESD, arXiv 2605.11458, and
OPSD, arXiv 2601.18734, assume) and the gold answer. Every row is validated on load; a bad row is
reported as ``FILE:LINE: field 'NAME': what is wrong``.

Sources and positions:

- ``.jsonl``: one JSON object per line; blank lines are ignored. Positions are 1-based file lines.
- ``.csv``: a header row, then one row per problem (quoted cells may span lines). Positions are the
  1-based file line where the row starts; the header is line 1. An empty cell of an optional
  field (id, answer, difficulty, source) counts as absent.
- ``.json``: a list of objects, or an object whose ``"data"`` key holds that list (the layout
  ``datasets`` writes with ``to_json(lines=False)``). Positions are ``row N``, 1-based.
- ``.parquet``: positions are ``row N``, 1-based.
- Anything else that is not an existing local path and does not look like one (no known suffix,
  not starting with ``/``, ``.`` or ``~``) is a hub dataset name: ``datasets.load_dataset(source,
  split=split)``; positions are ``row N`` of that split.

Choices the papers leave open (ours):

1. ``answer`` absent or null → the content of the solution's last ``\\boxed{}``. A solution without
   a non-empty box is always rejected, since `reveal` must keep a final-answer sentence.
2. ``id`` absent or null → ``f"{stem}-{index}"``: the file stem (hub: the dataset's last name part
   and the split, ``gsm8k-train``) and the 0-based index of the record among all records, bad ones
   included, so skipping a bad row never renames the others.
3. ``id`` and ``answer`` may be JSON integers (converted with ``str``); every other required field
   must be a non-empty string. ``difficulty`` is an integer >= 1, a string of digits or a
   ``"Level N"`` string (the MATH dataset's form). ``source`` is copied from the row when present,
   else None.
4. Validation collects every bad field of every row. ``on_bad_row="error"`` raises one `DataError`
   with one line per bad field (the first 200 in the message, all in ``DataError.bad_rows``);
   ``"skip"`` drops those rows, logs one warning with the count per reason and each skipped
   row's location and details (the first 20 rows, then "... and K more"), and
   `load_problems_with_report` returns what was skipped. Problems that concern the whole file
   (missing, unreadable, a mapped column absent from a CSV header or Parquet schema, nothing in
   it, every row skipped: "no usable rows") raise `DataError` in both modes. With
   ``max_bad_row_share`` set, ``"skip"`` also raises when the skipped rows are more than that share
   of the rows read (a file that is mostly bad is a wrong file or a wrong column map, not noise).
   The messages name the settings as the caller's user types them (`BadRowOptions`:
   ``data.on_bad_row=skip`` for `atesd train`, ``--on-bad-row skip`` for `atesd eval`, the keyword
   arguments for the library).
5. ``require_solution=False`` loads an evaluation-only set (AIME, HMMT: a problem and a final
   answer, no worked solution). The solution column becomes optional (absent → ``solution=""``)
   and is not checked for a box when the row gives an answer; a row needs an answer, from the
   answer column or else the solution's last box. Training never passes this flag: `reveal`
   needs a solution with a final-answer box.
6. A row whose given answer disagrees with its solution's last box (`atesd.data_checks`:
   normalised strings, then math-verify) is kept, with its given answer as the gold one, and named
   in one warning (capped like the skipped rows). Rows without a boxed solution are not compared.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from atesd import atomic
from atesd.answers import extract_boxed
from atesd.data_checks import capped, warn_answer_disagreements
from atesd.data_sources import (
    SUFFIXES,
    BadRow,
    DataError,
    RawRow,
    is_local,
    read_csv,
    read_hub,
    read_json,
    read_jsonl,
    read_parquet,
)

__all__ = [
    "Problem",
    "DataError",
    "BadRow",
    "LoadReport",
    "BadRowOptions",
    "load_problems",
    "load_problems_with_report",
    "write_problems",
]

logger = logging.getLogger(__name__)

_ON_BAD_ROW = ("error", "skip")


@dataclass(frozen=True)
class BadRowOptions:
    """How the user of a caller spells the two bad-row settings, for the messages that name them:
    `skip` the setting that drops bad rows, `max_share` the name of the threshold share."""

    skip: str
    max_share: str


LIBRARY_OPTIONS = BadRowOptions("on_bad_row='skip'", "max_bad_row_share")
TRAIN_OPTIONS = BadRowOptions("data.on_bad_row=skip", "data.max_bad_row_share")
EVAL_OPTIONS = BadRowOptions("--on-bad-row skip", "--max-bad-row-share")
_MESSAGE_LINE_LIMIT = 200
_LEVEL = re.compile(r"(?:level\s*)?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One problem: ``problem`` is x, ``solution`` the reference y*, ``answer`` the gold answer
    (the content of y*'s last box unless the source gives it). ``solution`` is "" only for an
    evaluation-only set loaded with ``require_solution=False``."""

    id: str
    problem: str
    solution: str
    answer: str
    difficulty: int | None = None
    source: str | None = None


_FIELD_NAMES = tuple(field.name for field in fields(Problem))


@dataclass(frozen=True)
class LoadReport:
    """What a load produced: the valid problems in source order and the bad fields skipped."""

    problems: tuple[Problem, ...]
    skipped: tuple[BadRow, ...]

    @property
    def skipped_rows(self) -> int:
        """Number of rows dropped (a row with two bad fields counts once)."""
        return len({bad.location for bad in self.skipped})

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Bad-field count per reason, e.g. ``{"invalid JSON": 2, "no boxed answer": 1}``."""
        return dict(Counter(bad.reason for bad in self.skipped))


def _text_field(values: Mapping[str, Any], column: str, field: str, location: str) -> str | BadRow | None:
    """A string field: None when absent or null (or empty, for an optional field: a CSV cell),
    the string (``id`` and ``answer`` may be integers), or a BadRow."""
    value = values.get(column)
    optional = field not in ("problem", "solution")
    if value is None or (optional and value == ""):
        return None
    allow_int = field in ("id", "answer")
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        return BadRow(location, field, "wrong type", f"must be a string, got {type(value).__name__} {value!r:.40}")
    if not value.strip():
        return BadRow(location, field, "empty", "is empty")
    return value


def _difficulty(value: Any, location: str) -> int | BadRow | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        level = _LEVEL.fullmatch(value.strip())
        if level is None:
            detail = f"must be an integer >= 1 or 'Level N', got {value!r:.40}"
            return BadRow(location, "difficulty", "invalid difficulty", detail)
        value = int(level.group(1))
    if isinstance(value, bool) or not isinstance(value, int):
        detail = f"must be an integer >= 1, got {type(value).__name__} {value!r:.40}"
        return BadRow(location, "difficulty", "invalid difficulty", detail)
    if value < 1:
        return BadRow(location, "difficulty", "invalid difficulty", f"must be an integer >= 1, got {value}")
    return value


def _validated(
    record: RawRow, columns: dict[str, str], id_stem: str, require_solution: bool = True
) -> Problem | list[BadRow]:
    """The Problem in ``record``, or every bad field in it (departures 1-3 and 5 in the module
    docstring)."""
    values, location = record.values, record.location
    assert values is not None
    bad: list[BadRow] = []
    text: dict[str, str | None] = {}
    required = ("problem", "solution") if require_solution else ("problem",)
    for field in ("id", "problem", "solution", "answer", "source"):
        value = _text_field(values, columns[field], field, location)
        if isinstance(value, BadRow):
            bad.append(value)
        elif value is None and field in required:
            bad.append(BadRow(location, field, "missing", f"missing (looked for column '{columns[field]}')"))
        else:
            text[field] = value
    solution = text.get("solution")
    # An evaluation-only row that gives its answer needs no boxed solution (departure 5).
    has_answer = bool(text.get("answer")) or any(b.field == "answer" for b in bad)
    if solution is not None and (require_solution or not has_answer):
        boxed = extract_boxed(solution)
        if boxed is None:
            bad.append(BadRow(location, "solution", "no boxed answer", "no \\boxed{} final answer"))
        elif not boxed:
            bad.append(BadRow(location, "solution", "no boxed answer", "the last \\boxed{} is empty"))
    elif solution is None and not require_solution and not has_answer:
        detail = f"missing (looked for column '{columns['answer']}'; no solution to take a box from)"
        bad.append(BadRow(location, "answer", "missing", detail))
    difficulty = _difficulty(values.get(columns["difficulty"]), location)
    if isinstance(difficulty, BadRow):
        bad.append(difficulty)
    if bad:
        return bad
    solution = solution or ""
    return Problem(
        id=(text["id"] or "").strip() or f"{id_stem}-{record.index}",
        problem=text["problem"] or "",
        solution=solution,
        answer=(text["answer"] or extract_boxed(solution) or "").strip(),
        difficulty=difficulty,
        source=text["source"],
    )


def _column_map(columns: Mapping[str, str] | None) -> dict[str, str]:
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(_FIELD_NAMES))
    if unknown:
        raise ValueError(f"columns: unknown field(s) {unknown}; the fields are {list(_FIELD_NAMES)}")
    for field, column in columns.items():
        if not isinstance(column, str):
            raise ValueError(f"columns[{field!r}] must be a column name (str), got {column!r}")
    return {field: columns.get(field, field) for field in _FIELD_NAMES}


def load_problems_with_report(
    source: str | os.PathLike[str],
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    on_bad_row: str = "error",
    require_solution: bool = True,
    max_bad_row_share: float | None = None,
    options: BadRowOptions = LIBRARY_OPTIONS,
) -> LoadReport:
    """Load and validate problems; return them with the bad fields that were skipped.

    Args:
        source: a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file, or a hub dataset name.
        split: the hub split (``"train"``, ``"test"``); only for hub datasets.
        columns: our field name → the source's column name, e.g. ``{"problem": "question"}``;
            unmapped fields are looked up under their own name.
        on_bad_row: ``"error"`` raises one DataError listing every bad field; ``"skip"`` drops
            bad rows and logs a warning naming them; every row bad is a DataError in both modes.
        require_solution: False loads an evaluation-only set: no solution needed, but an
            answer (departure 5 in the module docstring). Never for training data.
        max_bad_row_share: with ``"skip"``, more skipped rows than this share of the rows read is a
            DataError (None: no limit).
        options: how the messages spell the settings (`BadRowOptions`).

    Raises:
        DataError: bad rows (``"error"`` mode) or a problem with the whole source.
        ValueError: a bad ``on_bad_row``, ``columns`` or ``split`` argument.
    """
    if on_bad_row not in _ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {_ON_BAD_ROW}, got {on_bad_row!r}")
    if max_bad_row_share is not None and not 0 <= max_bad_row_share <= 1:
        raise ValueError(f"{options.max_share} must be a share between 0 and 1, got {max_bad_row_share}")
    column_map = _column_map(columns)
    # A header or schema can be checked up front for the columns that must exist in it.
    needed = ("problem", "solution") if require_solution else ("problem",)
    required = {field: column_map[field] for field in needed}
    required.update({field: column for field, column in (columns or {}).items()})

    if is_local(source):
        path = Path(os.path.expanduser(source))
        label = str(source)
        if split is not None:
            raise ValueError(f"split={split!r} applies to hub datasets only; {label} is a local path")
        if not path.exists():
            raise DataError(f"{label}: file not found")
        if path.is_dir():
            raise DataError(f"{label}: is a directory; pass one {'/'.join(SUFFIXES)} file")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            records: Iterable[RawRow] = read_jsonl(path, label)
        elif suffix == ".json":
            records = read_json(path, label)
        elif suffix == ".csv":
            records = read_csv(path, label, required)
        elif suffix == ".parquet":
            records = read_parquet(path, label, required)
        else:
            raise DataError(f"{label}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
        id_stem = path.stem
    else:
        label = source
        records, id_stem = read_hub(source, split, required)

    problems: list[Problem] = []
    locations: list[str] = []
    bad_rows: list[BadRow] = []
    first_seen: dict[str, str] = {}
    row_count = 0
    for record in records:
        row_count += 1
        if record.unreadable is not None:
            bad_rows.append(record.unreadable)
            continue
        result = _validated(record, column_map, id_stem, require_solution)
        if isinstance(result, list):
            bad_rows.extend(result)
        elif result.id in first_seen:
            detail = f"duplicate id {result.id!r} (first at {first_seen[result.id]})"
            bad_rows.append(BadRow(record.location, "id", "duplicate id", detail))
        else:
            first_seen[result.id] = record.location
            problems.append(result)
            locations.append(record.location)
    if row_count == 0:
        raise DataError(f"{label}: no rows")

    if bad_rows and on_bad_row == "error":
        shown = "\n".join(str(bad) for bad in bad_rows[:_MESSAGE_LINE_LIMIT])
        more = len(bad_rows) - _MESSAGE_LINE_LIMIT
        tail = f"\n... and {more} more (all in DataError.bad_rows)" if more > 0 else ""
        rows = len({bad.location for bad in bad_rows})
        raise DataError(
            f"{label}: {rows} bad row(s); fix them or pass {options.skip} to drop them:\n{shown}{tail}",
            bad_rows,
        )
    report = LoadReport(tuple(problems), tuple(bad_rows))
    if bad_rows:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped_by_reason.items()))
        if not problems:
            raise DataError(f"{label}: no usable rows: {report.skipped_rows} skipped ({reasons}), e.g. "
                            f"{bad_rows[0]}; fix the rows or map the columns")
        listing = "".join(f"\n  {entry}" for entry in capped(_by_row(bad_rows)))
        share = report.skipped_rows / row_count
        if max_bad_row_share is not None and share > max_bad_row_share:
            raise DataError(f"{label}: {report.skipped_rows} of {row_count} rows are bad ({share:.1%}: {reasons}), "
                            f"more than {options.max_share}={max_bad_row_share}; fix the rows or the column map, "
                            f"or raise {options.max_share}:{listing}", bad_rows)
        logger.warning("%s: skipped %d bad row(s) (%s); kept %d:%s",
                       label, report.skipped_rows, reasons, len(problems), listing)
    warn_answer_disagreements(label, zip(locations, problems))
    return report


def _by_row(bad_rows: Iterable[BadRow]) -> list[str]:
    """One entry per bad row: its location and every bad field's detail, in source order."""
    rows: dict[str, list[str]] = {}
    for bad in bad_rows:
        rows.setdefault(bad.location, []).append(str(bad)[len(bad.location) + 2:])
    return [f"{location}: {'; '.join(details)}" for location, details in rows.items()]


def load_problems(
    source: str | os.PathLike[str],
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    on_bad_row: str = "error",
    require_solution: bool = True,
    max_bad_row_share: float | None = None,
    options: BadRowOptions = LIBRARY_OPTIONS,
) -> list[Problem]:
    """The problems of ``source``; see `load_problems_with_report` for the arguments and errors."""
    return list(load_problems_with_report(source, split, columns, on_bad_row, require_solution, max_bad_row_share,
                                          options).problems)


def write_problems(path: str | os.PathLike[str], problems: Iterable[Problem]) -> None:
    """Write ``problems`` as JSONL (one object per line, every field, UTF-8), atomically
    (`atesd.atomic`): a reader never sees half a file."""
    lines = []
    for problem in problems:
        if not isinstance(problem, Problem):
            raise TypeError(f"write_problems expects Problem records, got {type(problem).__name__}")
        lines.append(json.dumps(asdict(problem), ensure_ascii=False) + "\n")
    atomic.write_text(path, "".join(lines))
