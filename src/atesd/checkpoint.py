"""The run directory: resolved config, metric logs and atomic, exactly resumable checkpoints.

Layout of `output_dir`:
  config.yaml          the resolved configuration
  metrics.jsonl        one line per optimizer step
  exposure.jsonl       one line per exposure decision / controller update
  checkpoints/step-000040/   accelerate state (model or adapter, optimizer, scheduler, RNG)
                             + components.pt (teacher, exposure policy, loop counters)

A checkpoint is written into a temporary directory and renamed into place, so a run killed at any
moment leaves only complete checkpoints. Resuming truncates the logs to the checkpoint's step (and
drops a line cut off by the kill), so a resumed run's logs equal an uninterrupted run's.

Two runs never share a folder (`check_output_dir`): a new run into a non-empty `output_dir` stops
unless it resumes (`--resume`) or moves the old run aside (`--overwrite`: renamed to the sibling
`<output_dir>.old-<YYYYmmdd-HHMMSS>`, nothing deleted); resuming a folder without a checkpoint
says so and starts at step 0.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import torch

from atesd import atomic

_STEP_DIR = re.compile(r"^step-(\d{6,})$")
logger = logging.getLogger(__name__)


def _json_object(line: str) -> dict | None:
    """The JSON object on a log line, or None when the line is not one (cut off, garbled)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def check_output_dir(path: str | Path, resume: bool, overwrite: bool) -> None:
    """Stop a new run (neither `resume` nor `overwrite`) whose `output_dir` already holds files, so
    that two runs' logs and checkpoints never mix. Read-only: every process may call it."""
    path = Path(path)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite (resume=True, overwrite=True) exclude each other: "
                         "resume continues the run in output_dir, overwrite moves it aside")
    if resume or overwrite or not path.is_dir() or not any(path.iterdir()):
        return
    raise FileExistsError(f"output_dir {path} already holds a run; continue it with --resume (train(cfg, resume=True)) "
                          f"or move it aside to {path}.old-<time> and start anew with --overwrite (overwrite=True), "
                          "or choose another output_dir")


def move_aside(path: str | Path) -> Path | None:
    """Rename a non-empty `path` to the sibling `<path>.old-<YYYYmmdd-HHMMSS>` (a counter is added if
    that exists); returns the new location, or None when there was nothing to move."""
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.old-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.old-{stamp}-{n}")
    os.replace(path, target)
    logger.warning("%s: moved the previous run aside to %s (--overwrite)", path, target)
    return target


class RunDir:
    def __init__(self, path: str | Path, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        self.checkpoints = self.path / "checkpoints"
        if is_main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    # ---- logs -------------------------------------------------------------------------------
    def append(self, name: str, record: dict) -> None:
        if self.is_main:
            with open(self.path / name, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def truncate_logs(self, step: int) -> None:
        """Drop log lines of steps >= `step` (written after the checkpoint we resume from), and
        lines that are not a JSON object: a run killed mid-write leaves a half-written last line
        (dropped quietly); a bad line anywhere else is dropped with a warning naming it."""
        if not self.is_main:
            return
        for name in ("metrics.jsonl", "exposure.jsonl"):
            file = self.path / name
            if not file.exists():
                continue
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
            kept = []
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                record = _json_object(line)
                if record is None:
                    if number < len(lines):
                        logger.warning("%s:%d: dropped a line that is not a JSON object: %.80s", file, number, line)
                    else:
                        logger.info("%s:%d: dropped a half-written last line (a killed run)", file, number)
                elif record.get("step", -1) < step:
                    kept.append(line)
            atomic.write_text(file, "".join(line + "\n" for line in kept))

    # ---- checkpoints ------------------------------------------------------------------------
    def latest(self) -> tuple[int, Path] | None:
        found = [(int(m.group(1)), p) for p in self.checkpoints.glob("step-*")
                 if (m := _STEP_DIR.match(p.name)) and (p / "components.pt").exists()]
        return max(found) if found else None

    def save(self, accelerator, step: int, components: dict, keep: int) -> Path:
        """Write checkpoint `step` atomically: temporary directory, then rename."""
        final = self.checkpoints / f"step-{step:06d}"
        tmp = self.checkpoints / f".tmp-step-{step:06d}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)  # before the barrier: every rank writes into it
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()  # every rank's RNG state is written before the rename
        if accelerator.is_main_process:
            torch.save(components, tmp / "components.pt")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in sorted(self._complete())[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def _complete(self):
        return [(int(m.group(1)), p) for p in self.checkpoints.glob("step-*") if (m := _STEP_DIR.match(p.name))]

    @staticmethod
    def load(accelerator, checkpoint: Path) -> dict:
        """Restore accelerate state in place; return the saved components (weights_only load)."""
        accelerator.load_state(str(checkpoint))
        return torch.load(checkpoint / "components.pt", weights_only=True)
