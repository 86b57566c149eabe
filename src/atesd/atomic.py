"""Atomic writes: a reader (or a resumed run) never sees half a file or half a folder.

Everything is written into a temporary sibling first and renamed over the target with `os.replace`,
which is atomic on one file system: a process killed at any moment leaves either the old content or
the new one. The one place the project writes files and folders that must survive a kill. A folder staged by a
process that was killed is removed the next time anyone stages the same target.
"""

from __future__ import annotations

import glob
import json
import os
import re
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of `target` (`.<name>.<purpose>-<pid>`, any purpose: building,
    saving, copying, ...) whose process is gone: what a kill between `staging_dir` and
    `replace_dir` leaves behind. Live processes' folders stay. Returns the removed ones."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.[a-z_]+-(\d+)$")
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*-*") if target.parent.is_dir() else []:
        match = pattern.match(candidate.name)
        pid = int(match.group(1)) if match else None
        if candidate.is_dir() and pid is not None and pid != os.getpid() and not _alive(pid):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def staging_dir(target: str | os.PathLike, purpose: str = "writing") -> Path:
    """An empty temporary sibling folder of `target` to build its new content in (this process's);
    stale staging folders of `target` left by killed processes are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
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
