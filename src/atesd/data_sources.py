"""Where problem rows come from: local JSONL / JSON / CSV / Parquet files and hub datasets.

Each reader yields raw rows (`RawRow`: a printable position, the row's index among all rows, and
its values or why it could not be read) for `atesd.data` to validate; whole-file problems raise
`DataError` at once. Positions are 1-based file lines (JSONL, CSV: the line where the row starts)
or `row N` (JSON, Parquet, hub datasets). See `atesd.data` for the formats.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# A CSV cell may be as long as a problem can be (the csv module's default stops at 131,072
# characters and would abort the whole file); long prompts are dropped per row instead
# (`data.max_prompt_tokens`).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


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
class RawRow:
    """One raw row before validation: its printable position, its index among all rows, and
    either its values or the reason it could not be read at all."""

    location: str
    index: int
    values: Mapping[str, Any] | None
    unreadable: BadRow | None = None


def _unreadable(location: str, index: int, reason: str, detail: str) -> RawRow:
    return RawRow(location, index, None, BadRow(location, None, reason, detail))


def read_jsonl(path: Path, label: str) -> Iterator[RawRow]:
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
                    yield RawRow(location, index, values)
                else:
                    detail = f"expected a JSON object, got {type(values).__name__}"
                    yield _unreadable(location, index, "not an object", detail)
        index += 1


def read_json(path: Path, label: str) -> Iterator[RawRow]:
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
            yield RawRow(location, index, values)
        else:
            detail = f"expected a JSON object, got {type(values).__name__}"
            yield _unreadable(location, index, "not an object", detail)


def _has_undecodable_bytes(text: str) -> bool:
    """Bytes that were not UTF-8 survive ``errors="surrogateescape"`` as lone surrogates."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def read_csv(path: Path, label: str, required_columns: dict[str, str]) -> Iterator[RawRow]:
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
    check_columns(label, header, required_columns)
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
            yield RawRow(location, index, dict(zip(header, cells)))
        index += 1


def read_parquet(path: Path, label: str, required_columns: dict[str, str]) -> Iterator[RawRow]:
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt or foreign file
        raise DataError(f"{label}: not a readable Parquet file ({error})") from error
    check_columns(label, table.column_names, required_columns)
    for index, values in enumerate(table.to_pylist()):
        yield RawRow(f"{label}:row {index + 1}", index, values)


def read_hub(name: str, split: str | None, required_columns: dict[str, str]) -> tuple[Iterator[RawRow], str]:
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
    check_columns(name, loaded.column_names, required_columns)
    label = f"{name}[{split}]"
    records = (RawRow(f"{label}:row {index + 1}", index, values) for index, values in enumerate(loaded))
    return records, f"{name.rstrip('/').split('/')[-1]}-{split}"


def check_columns(label: str, available: Iterable[str], required_columns: dict[str, str]) -> None:
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


def is_local(source: str | os.PathLike[str]) -> bool:
    if not isinstance(source, str):
        return True
    return (
        os.path.exists(source)
        or source.lower().endswith(SUFFIXES)
        or source.startswith(("/", ".", "~"))
    )
