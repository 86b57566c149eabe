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
   ``"skip"`` drops those rows, logs one warning with the count per reason, and
   `load_problems_with_report` returns what was skipped. Problems that concern the whole file
   (missing, unreadable, a mapped column absent from a CSV header or Parquet schema, nothing in
   it) raise `DataError` in both modes.
5. ``require_solution=False`` loads an evaluation-only set (AIME, HMMT: a problem and a final
   answer, no worked solution). The solution column becomes optional (absent → ``solution=""``)
   and is not checked for a box when the row gives an answer; a row needs an answer, from the
   answer column or else the solution's last box. Training never passes this flag: `reveal`
   needs a solution with a final-answer box.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from atesd.answers import extract_boxed

__all__ = [
    "Problem",
    "DataError",
    "BadRow",
    "LoadReport",
    "load_problems",
    "load_problems_with_report",
    "write_problems",
]

logger = logging.getLogger(__name__)

_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_ON_BAD_ROW = ("error", "skip")
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
class BadRow:
    """One bad field of one row. ``location`` is ``"path:7"`` (a file line) or ``"path:row 7"``;
    ``field`` is None when the row as a whole is bad (invalid JSON, invalid UTF-8); ``reason`` is a
    short category used for counting, ``detail`` the human explanation."""

    location: str
    field: str | None
    reason: str
    detail: str

    def __str__(self) -> str:
        if self.field is None:
            return f"{self.location}: {self.detail}"
        return f"{self.location}: field '{self.field}': {self.detail}"


class DataError(ValueError):
    """A data source cannot be used. The message names the file, the 1-based line (or row) and
    the field; ``bad_rows`` holds every bad field found (empty for whole-file errors)."""

    def __init__(self, message: str, bad_rows: Iterable[BadRow] = ()) -> None:
        super().__init__(message)
        self.bad_rows: tuple[BadRow, ...] = tuple(bad_rows)


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


@dataclass(frozen=True)
class _Record:
    """One raw row before validation: its printable position, its index among all rows, and
    either its values or the reason it could not be read at all."""

    location: str
    index: int
    values: Mapping[str, Any] | None
    unreadable: BadRow | None = None


def _unreadable(location: str, index: int, reason: str, detail: str) -> _Record:
    return _Record(location, index, None, BadRow(location, None, reason, detail))


def _read_jsonl(path: Path, label: str) -> Iterator[_Record]:
    index = 0
    for line_number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark
        if not raw.strip():
            continue
        location = f"{label}:{line_number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            detail = f"invalid UTF-8 at byte {error.start + 1} of the line"
            yield _unreadable(location, index, "invalid UTF-8", detail)
        else:
            try:
                values = json.loads(text)
            except json.JSONDecodeError as error:
                detail = f"invalid JSON: {error.msg} (column {error.colno})"
                yield _unreadable(location, index, "invalid JSON", detail)
            else:
                if isinstance(values, dict):
                    yield _Record(location, index, values)
                else:
                    detail = f"expected a JSON object, got {type(values).__name__}"
                    yield _unreadable(location, index, "not an object", detail)
        index += 1


def _read_json(path: Path, label: str) -> Iterator[_Record]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(f"{label}:{line}: invalid UTF-8; the whole JSON file cannot be read") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{label}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise DataError(
            f'{label}: expected a JSON list of objects or {{"data": [...]}}, got {type(document).__name__}'
        )
    for index, values in enumerate(document):
        location = f"{label}:row {index + 1}"
        if isinstance(values, dict):
            yield _Record(location, index, values)
        else:
            detail = f"expected a JSON object, got {type(values).__name__}"
            yield _unreadable(location, index, "not an object", detail)


def _has_undecodable_bytes(text: str) -> bool:
    """Bytes that were not UTF-8 survive ``errors="surrogateescape"`` as lone surrogates."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _read_csv(path: Path, label: str, required_columns: dict[str, str]) -> Iterator[_Record]:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    reader = csv.reader(io.StringIO(raw.decode("utf-8", errors="surrogateescape"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{label}: empty CSV file (expected a header row)") from None
    if _has_undecodable_bytes("".join(header)):
        raise DataError(f"{label}:1: invalid UTF-8 in the header row")
    _check_columns(label, header, required_columns)
    index = 0
    while True:
        start_line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(f"{label}:{start_line}: unreadable CSV: {error}") from None
        if not cells or not any(cell.strip() for cell in cells):
            continue
        location = f"{label}:{start_line}"
        if _has_undecodable_bytes("".join(cells)):
            yield _unreadable(location, index, "invalid UTF-8", "invalid UTF-8")
        elif len(cells) != len(header):
            detail = f"{len(cells)} cells but the header has {len(header)}"
            yield _unreadable(location, index, "malformed CSV row", detail)
        else:
            yield _Record(location, index, dict(zip(header, cells)))
        index += 1


def _read_parquet(path: Path, label: str, required_columns: dict[str, str]) -> Iterator[_Record]:
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt or foreign file
        raise DataError(f"{label}: not a readable Parquet file ({error})") from error
    _check_columns(label, table.column_names, required_columns)
    for index, values in enumerate(table.to_pylist()):
        yield _Record(f"{label}:row {index + 1}", index, values)


def _read_hub(name: str, split: str | None, required_columns: dict[str, str]) -> tuple[Iterator[_Record], str]:
    """Rows of a hub dataset and the stem for derived ids. Every failure becomes a DataError."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as error:  # offline, unknown name, unknown split, gated: all one story to the user
        where = f" split {split!r}" if split is not None else ""
        raise DataError(
            f"{name}: not a local file, and loading it as a Hugging Face hub dataset{where} failed: {error}"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise DataError(f"{name}: the dataset has splits {sorted(loaded)}; pass split= to choose one")
        split, loaded = next(iter(loaded.items()))
    _check_columns(name, loaded.column_names, required_columns)
    label = f"{name}[{split}]"
    records = (_Record(f"{label}:row {index + 1}", index, values) for index, values in enumerate(loaded))
    return records, f"{name.rstrip('/').split('/')[-1]}-{split}"


def _check_columns(label: str, available: Iterable[str], required_columns: dict[str, str]) -> None:
    """Whole-file check for sources with a header or schema: every column we need is there."""
    available = list(available)
    missing = [
        f"'{column}' (for field '{field}')"
        for field, column in required_columns.items()
        if column not in available
    ]
    if missing:
        raise DataError(
            f"{label}: column {', '.join(missing)} not found; available columns: {', '.join(available)}. "
            "Map fields to columns with columns={'problem': ..., 'solution': ...}"
        )


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
    record: _Record, columns: dict[str, str], id_stem: str, require_solution: bool = True
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


def _is_local(source: str | os.PathLike[str]) -> bool:
    if not isinstance(source, str):
        return True
    return (
        os.path.exists(source)
        or source.lower().endswith(_SUFFIXES)
        or source.startswith(("/", ".", "~"))
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
) -> LoadReport:
    """Load and validate problems; return them with the bad fields that were skipped.

    Args:
        source: a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file, or a hub dataset name.
        split: the hub split (``"train"``, ``"test"``); only for hub datasets.
        columns: our field name → the source's column name, e.g. ``{"problem": "question"}``;
            unmapped fields are looked up under their own name.
        on_bad_row: ``"error"`` raises one DataError listing every bad field; ``"skip"`` drops
            bad rows and logs a warning with the count per reason.
        require_solution: False loads an evaluation-only set: no solution needed, but an
            answer (departure 5 in the module docstring). Never for training data.

    Raises:
        DataError: bad rows (``"error"`` mode) or a problem with the whole source.
        ValueError: a bad ``on_bad_row``, ``columns`` or ``split`` argument.
    """
    if on_bad_row not in _ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {_ON_BAD_ROW}, got {on_bad_row!r}")
    column_map = _column_map(columns)
    # A header or schema can be checked up front for the columns that must exist in it.
    needed = ("problem", "solution") if require_solution else ("problem",)
    required = {field: column_map[field] for field in needed}
    required.update({field: column for field, column in (columns or {}).items()})

    if _is_local(source):
        path = Path(os.path.expanduser(source))
        label = str(source)
        if split is not None:
            raise ValueError(f"split={split!r} applies to hub datasets only; {label} is a local path")
        if not path.exists():
            raise DataError(f"{label}: file not found")
        if path.is_dir():
            raise DataError(f"{label}: is a directory; pass one {'/'.join(_SUFFIXES)} file")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            records: Iterable[_Record] = _read_jsonl(path, label)
        elif suffix == ".json":
            records = _read_json(path, label)
        elif suffix == ".csv":
            records = _read_csv(path, label, required)
        elif suffix == ".parquet":
            records = _read_parquet(path, label, required)
        else:
            raise DataError(f"{label}: unsupported file type {suffix!r}; use one of {', '.join(_SUFFIXES)}")
        id_stem = path.stem
    else:
        label = source
        records, id_stem = _read_hub(source, split, required)

    problems: list[Problem] = []
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
    if row_count == 0:
        raise DataError(f"{label}: no rows")

    if bad_rows and on_bad_row == "error":
        shown = "\n".join(str(bad) for bad in bad_rows[:_MESSAGE_LINE_LIMIT])
        more = len(bad_rows) - _MESSAGE_LINE_LIMIT
        tail = f"\n... and {more} more (all in DataError.bad_rows)" if more > 0 else ""
        rows = len({bad.location for bad in bad_rows})
        raise DataError(
            f"{label}: {rows} bad row(s); fix them or pass on_bad_row='skip' to drop them:\n{shown}{tail}",
            bad_rows,
        )
    report = LoadReport(tuple(problems), tuple(bad_rows))
    if bad_rows:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped_by_reason.items()))
        logger.warning(
            "%s: skipped %d bad row(s) (%s); kept %d", label, report.skipped_rows, reasons, len(problems)
        )
    return report


def load_problems(
    source: str | os.PathLike[str],
    split: str | None = None,
    columns: Mapping[str, str] | None = None,
    on_bad_row: str = "error",
    require_solution: bool = True,
) -> list[Problem]:
    """The problems of ``source``; see `load_problems_with_report` for the arguments and errors."""
    return list(load_problems_with_report(source, split, columns, on_bad_row, require_solution).problems)


def write_problems(path: str | os.PathLike[str], problems: Iterable[Problem]) -> None:
    """Write ``problems`` as JSONL (one object per line, every field, UTF-8), atomically: into a
    temporary file beside ``path``, then ``os.replace``, so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for problem in problems:
        if not isinstance(problem, Problem):
            raise TypeError(f"write_problems expects Problem records, got {type(problem).__name__}")
        lines.append(json.dumps(asdict(problem), ensure_ascii=False) + "\n")
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
