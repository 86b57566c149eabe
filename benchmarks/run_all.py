"""Run every systems benchmark and write one markdown report (`make bench`).

Each benchmark runs as its own process (`benchmarks/<name>.py [--quick] --json ...`), one after
another, never concurrently (they would share the CPU). The combined markdown section (headline
figures, each benchmark's tables, the commands, the machine) is printed and written to
`benchmarks/results/<name>.md` with the raw numbers in `<name>.json`.

    python benchmarks/run_all.py                  # full sizes (about 10 minutes on 2 cores)
    python benchmarks/run_all.py --quick          # tiny sizes, each benchmark < 60 s
    python benchmarks/run_all.py --only step_time,flops

`trl_step` (atesd vs TRL's SDFTTrainer) is optional: it runs only where `import trl` works (TRL is a
benchmark-only dependency, e.g. `.venv-trl/bin/python benchmarks/run_all.py`); elsewhere it is
skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import command_line, machine, machine_line, progress, table, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("divergence_memory", "step_time", "credit_cost", "flops", "trl_step")
OPTIONAL = {"trl_step": "trl"}  # benchmark → module it needs; skipped where that import fails


def missing_module(name: str) -> str | None:
    """The module an optional benchmark needs when it cannot be imported here, else None."""
    module = OPTIONAL.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return module
    return None


def run_benchmark(name: str, quick: bool, extra: list[str]) -> dict:
    """Runs benchmarks/<name>.py in a child process; returns its result dict."""
    with tempfile.TemporaryDirectory(prefix="atesd-bench-") as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else []), *extra, "--json", str(out)]
        progress(f"== {name}: {' '.join(cmd[1:-2])}")
        t0 = time.perf_counter()
        # the child's report goes to stderr with its progress; this process prints the combined one
        done = subprocess.run(cmd, stdout=sys.stderr)
        if done.returncode != 0:
            return {"benchmark": name, "error": f"exit code {done.returncode}", "wall_s": time.perf_counter() - t0}
        result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - t0
    result["command"] = " ".join(["python", f"benchmarks/{name}.py", *(["--quick"] if quick else []), *extra])
    return result


def headline(results: dict) -> list[list]:
    rows = []
    div = results.get("divergence_memory")
    if div and "error" not in div:
        naive = div["variants"][0]
        for m in div["variants"][1:]:
            rows.append([f"divergence working memory, naive / {m['variant']}",
                         f"{naive['working_mib']:.0f} / {m['working_mib']:.0f} MiB = "
                         f"{m['working_ratio_naive_over_this']:.2f}×", f"≥ {div['goal_working_ratio']:.0f}×"])
        rows.append(["divergence values and gradients equal (chunked vs naive)",
                     "pass" if div["values_equal"] else "FAIL", f"rel ≤ {div['check']['tolerance']:g}"])
    step = results.get("step_time")
    if step and "error" not in step:
        rows.append(["step time ATESD / OPSD", f"{step['ratio_atesd_over_opsd']:.3f}×",
                     f"≤ {step['goal_ratio']:.2f}×"])
    credit = results.get("credit_cost")
    if credit and "error" not in credit:
        rows.append(["paired credit, forward mode / central difference (same derivative)",
                     f"{credit['forward_over_central']:.2f}×", "—"])
    trl_step = results.get("trl_step")
    if trl_step and "error" not in trl_step and "skipped" not in trl_step:
        rows.append(["full OPSD step, atesd / TRL SDFTTrainer steps/s (slowest case)",
                     f"{trl_step['min_speedup']:.2f}×", f"≥ {trl_step['goal_speedup']:.1f}×"])
    flops = results.get("flops")
    if flops and "error" not in flops:
        for m in flops["models"]:
            rows.append([f"{m['preset']} fwd+bwd FLOP/s, fraction of fp32 matmul",
                         f"{m['flops_per_s'] / 1e9:.1f} / {flops['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s = "
                         f"{100 * m['fraction_of_matmul']:.0f}%", "—"])
    return rows


def to_markdown(results: dict, info: dict, command: str, quick: bool) -> str:
    parts = [
        f"## Systems benchmarks{' (quick)' if quick else ''}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line(info)}  ",
        f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "",
        "Ratios compare variants measured side by side in the same run; absolute times depend on "
        "the load from other users of the machine.",
        "",
        table(["figure", "measured", "goal"], headline(results)),
    ]
    for name, result in results.items():
        parts += ["", f"Command: `{result.get('command', name)}` ({result['wall_s']:.0f} s)", ""]
        if "skipped" in result:
            parts.append(f"### {name}\n\nSkipped: {result['skipped']}")
        else:
            parts.append(result["markdown"] if "markdown" in result else f"### {name}\n\nFAILED: {result['error']}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for every benchmark")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--name", default=None, help="results file stem (default: systems, or systems-quick)")
    args = parser.parse_args(argv)
    chosen = BENCHMARKS if not args.only else tuple(args.only.split(","))
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    info, command = machine(), command_line()
    results = {}
    for name in chosen:
        missing = missing_module(name)
        if missing:
            note = f"`import {missing}` fails in this environment (optional, benchmark-only dependency)"
            progress(f"== {name}: skipped, {note}")
            results[name] = {"benchmark": name, "skipped": note, "wall_s": 0.0,
                             "command": f"python benchmarks/{name}.py"}
        else:
            results[name] = run_benchmark(name, args.quick, [])
    markdown = to_markdown(results, info, command, args.quick)
    name = args.name or ("systems-quick" if args.quick else "systems")
    md, js = write_results(name, markdown, {"command": command, "machine": info, "results": results})
    print(markdown)
    print(f"\nwrote {md.relative_to(HERE.parent)} and {js.relative_to(HERE.parent)}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
