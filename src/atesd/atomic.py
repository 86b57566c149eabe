"""Atomic writes: a reader (or a resumed run) never sees half a file or half a folder.

Everything is written into a temporary sibling first and renamed over the target with `os.replace`,
which is atomic on one file system: a process killed at any moment leaves either the old content or
the new one. The one place the project writes files and folders that must survive a kill.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`data` into `path`, through a temporary file in the same folder (flushed to disk first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """`text` (UTF-8, newlines as written) into `path`, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, payload, indent: int | None = 2) -> Path:
    """`payload` as JSON (a trailing newline) into `path`, atomically."""
    return write_text(path, json.dumps(payload, indent=indent, ensure_ascii=False, default=str) + "\n")


def staging_dir(target: str | os.PathLike, purpose: str = "writing") -> Path:
    """An empty temporary sibling folder of `target` to build its new content in (this process's)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{purpose}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished folder `staging` in place of `target` (removing what was there).

    The rename itself is atomic; between removing the old folder and the rename a kill leaves no
    `target`, never a half one, and the caller's staging folder is cleaned by its next run.
    """
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target
