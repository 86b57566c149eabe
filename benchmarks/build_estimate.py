"""The plan of `atesd toy build` against its wall time (issue 27): each command's printed estimate
of the whole command, its wall time measured around the process, their ratio and the verdict.

    python benchmarks/build_estimate.py --out runs/build-estimate            # the table of docs/toy-world.md 12
    python benchmarks/build_estimate.py --out runs/build-estimate --only toy2000-3min

Writes the two problem files it needs (the first 2,000 problems of the shipped world's train split;
`horner_data.py --n 2000 --levels 5`), runs every command one after the other with a fresh cache
under --out, and prints a Markdown row per command, from the report.json each writes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from horner_data import horner_problem  # noqa: E402
from atesd.data import load_problems, write_problems  # noqa: E402
from atesd.toy.build import SHIPPED_DIR  # noqa: E402

COMMANDS = {
    "shipped": [],
    "toy2000-3min": ["--data", "{toy}", "--minutes", "3", "--threads", "1"],
    "horner5-test-5min": ["--data", "{horner}", "--preset", "toy-test", "--minutes", "5", "--threads", "1"],
    "toy2000-15min": ["--data", "{toy}", "--minutes", "15", "--threads", "1"],
    "horner5-15min": ["--data", "{horner}", "--minutes", "15", "--threads", "1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(COMMANDS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"toy": out / "toy2000.jsonl", "horner": out / "horner5.jsonl"}
    write_problems(files["toy"], load_problems(SHIPPED_DIR / "toy-1m" / "data" / "train.jsonl")[:2000])
    rng = random.Random(0)
    write_problems(files["horner"], [horner_problem(i, rng, levels=5) for i in range(2000)])
    env = {**os.environ, "ATESD_CACHE": str(out / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    print("| command | plan | wall | wall / plan | verdict |\n|---|---|---|---|---|")
    for name in args.only or COMMANDS:
        flags = [flag.format(**{k: str(v) for k, v in files.items()}) for flag in COMMANDS[name]]
        command = ["atesd", "toy", "build", *flags, "--out", str(out / name)]
        started = time.monotonic()
        with open(out / f"{name}.log", "w") as log:
            status = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.monotonic() - started
        report = json.loads((out / name / "report.json").read_text())
        plan = report["plan"]["total_seconds"]
        verdict = "usable" if report["verdict"]["usable"] else "NOT usable"
        print(f"| `{' '.join(command[1:])}` (exit {status}) | {plan / 60:.1f} min | {wall / 60:.1f} min | "
              f"{wall / plan:.2f} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
