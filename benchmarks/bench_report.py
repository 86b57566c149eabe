"""What every benchmark report shares: the machine it ran on, markdown tables, and result files.

Figures from this shared, noisy 2-core machine are only comparable within one run, so each
benchmark measures its variants side by side and reports ratios; `machine()` records where.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """atesd.experiments.bench.machine_info (CPU model, cores, torch, Python) plus memory and load at the start."""
    from atesd.experiments.bench import machine_info

    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {**machine_info(), "load_average_1min": load, "memory_gib": memory_gib}


def machine_line(info: dict) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, "
            f"load average {info['load_average_1min']} at start; torch {info['torch']}, "
            f"Python {info['python']}")


def command_line() -> str:
    """The command that produced this run, as typed from the repository root."""
    return " ".join(shlex.quote(a) for a in ["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats keep 3 significant digits unless already formatted as str."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        return "—" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike | None, result: dict) -> None:
    """A benchmark's result dict as JSON (for run_all.py), when --json was given."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2, default=str))


def write_results(name: str, markdown: str, result: dict) -> tuple[Path, Path]:
    """benchmarks/results/<name>.md and .json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    md, js = RESULTS_DIR / f"{name}.md", RESULTS_DIR / f"{name}.json"
    md.write_text(markdown.rstrip() + "\n")
    js.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return md, js


def publish(result: dict, to_markdown, json_path: str | os.PathLike | None) -> dict:
    """Stamp a benchmark result with the machine and command, print its markdown section and
    write the JSON (the common end of every benchmark's main())."""
    result["machine"], result["command"] = machine(), command_line()
    result["markdown"] = to_markdown(result)
    print(result["markdown"])
    print(f"\nCommand: `{result['command']}`  \nMachine: {machine_line(result['machine'])}")
    write_json(json_path, result)
    return result


def progress(message: str) -> None:
    """Progress goes to stderr so stdout stays the report."""
    print(message, file=sys.stderr, flush=True)
