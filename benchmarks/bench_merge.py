"""Pool the runs of several bench folders into one report (for example a bench and its replication on
further seeds, or method subsets run side by side, each with its own bench.json):

    python benchmarks/bench_merge.py docs/figures/bench-toy/bench.json \
        docs/figures/bench-toy-replication/bench.json --methods base opsd atesd-per-difficulty \
        --out runs/bench-pooled

Writes bench.json, BENCHMARKS-toy.md and the PNGs of `atesd.experiments.bench_report` into --out. The
benches must share one budget (steps, validation, test protocol) and one set of overrides, and a
(method, seed) may come from one of them only, unless its per-problem test results are the same in
each (the base row, evaluated in every folder); otherwise the error names the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atesd.experiments.bench import METHODS
from atesd.experiments.bench_report import write_report

SHARED = ("budget", "overrides", "suite")  # what two benches must agree on to be pooled


def _same_run(a: dict, b: dict) -> bool:
    """Equal test results problem by problem (what a later report format added to a result does not count)."""
    return a["test"]["per_problem_accuracy"] == b["test"]["per_problem_accuracy"]


def merge(paths: list[Path], methods: list[str] | None = None) -> tuple[list[dict], dict]:
    """(results, meta) of the pooled benches, in the bench's method order then by seed."""
    first = json.loads(paths[0].read_text())
    results, origin, seen = [], {}, {}
    for path in paths:
        bench = first if path == paths[0] else json.loads(path.read_text())
        for key in SHARED:
            if bench.get(key) != first.get(key):
                raise SystemExit(f"{path}: its {key} differs from {paths[0]}'s; benches pool only under one {key}")
        for result in bench["results"]:
            if methods and result["method"] not in methods:
                continue
            run = (result["method"], result["seed"])
            if run in origin:
                if _same_run(result, seen[run]):  # the same deterministic run in two folders (a base row)
                    continue
                raise SystemExit(f"{path}: {run[0]} seed {run[1]} is also in {origin[run]}, with other results")
            seen[run] = result
            origin[run] = path
            results.append(result)
    order = {m.name: i for i, m in enumerate(METHODS)}
    results.sort(key=lambda r: (order.get(r["method"], len(order)), r["seed"]))
    meta = {k: v for k, v in first.items() if k != "results"}
    meta.update(methods=list(dict.fromkeys(r["method"] for r in results)), seeds=sorted({r["seed"] for r in results}),
                command="python benchmarks/bench_merge.py " + " ".join(str(p) for p in paths)
                + (" --methods " + " ".join(methods) if methods else ""),
                sources=[str(p) for p in paths])
    return results, meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_json", nargs="+", type=Path)
    parser.add_argument("--methods", nargs="+", help="keep only these methods (default: every method)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for path in args.bench_json:
        if not path.is_file():
            raise SystemExit(f"{path}: no such bench.json")
    results, meta = merge(args.bench_json, args.methods)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in write_report(args.out, results, meta):
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
