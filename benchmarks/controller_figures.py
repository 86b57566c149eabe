"""The controller tables of docs/toy-world.md (sections 8.3 and 8.4), recomputed from committed JSON.

    python benchmarks/controller_figures.py credit docs/figures/controller/credit_probe_step125.json \
        docs/figures/controller/credit_probe_step250.json docs/figures/controller/credit_probe_step500.json

prints the credit-probe table: z = mean(c(0.5) − c(1)) / SE per difficulty level, for each probe size
and preconditioner P, from the per-rollout credits c(α) each file holds (`benchmarks/credit_probe.py`
wrote them from a bench checkpoint; `credit_probe.z_scores` is the statistic).

    python benchmarks/controller_figures.py rewards docs/figures/controller/reward_correlations.json

prints corr(α − α′, R) overall and per level (95% interval of Fisher's z) for every run the file holds
(`atesd diagnose rewards <run>` wrote them). The runs' exposure.jsonl, the per-decision rewards they
summarise, are not committed (16,000 credited rollouts per per-difficulty run); the file is what the
docs' tables are read from, and a bench records the same summary in each learned run's result.json
(`reward_correlations`), so a committed bench.json carries it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from credit_probe import z_scores  # noqa: E402

VARIANTS = (("16 problems, Adam (the toy config's)", "probe16-adam"), ("16 problems, none", "probe16-identity"),
            ("64 problems, Adam", "probe64-adam"), ("64 problems, none", "probe64-identity"))
LEVELS = ("1", "2", "3", "4", "5")


def signed(value: float, digits: int = 1) -> str:
    """+0.5 / −1.8 (a typographic minus, as the docs print it)."""
    return f"{value:+.{digits}f}".replace("-", "−")


def credit_table(files: list[Path], ratio: float = 0.5) -> list[str]:
    """Markdown rows: one per probe variant, one cell per file (checkpoint) with the z of each level."""
    probes = [json.loads(path.read_text()) for path in files]
    lines = ["| probe, P | " + " | ".join(f"step {p['step']}: levels 1 … 5" for p in probes) + " |",
             "|---|" + "---|" * len(probes)]
    for label, key in VARIANTS:
        cells = []
        for probe in probes:
            table = torch.tensor(probe["credit"][key], dtype=torch.float64)  # [ratios, rollouts]
            column = probe["ratios"].index(ratio)
            cells.append(" ".join(signed(z_scores(table, [i for i, d in enumerate(probe["difficulty"])
                                                          if str(d) == level])[column]) for level in LEVELS))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def reward_table(path: Path) -> list[str]:
    """Markdown rows: each run's corr(α − α′, R) overall and per level, r (lower … upper)."""
    runs = json.loads(path.read_text())

    def cell(part: dict | None) -> str:
        if not part:
            return "–"
        low, high = part["ci95"]
        return f"{signed(part['r'], 2)} ({signed(low, 2)} … {signed(high, 2)})"

    lines = ["| run | decisions | overall | " + " | ".join(f"level {lv}" for lv in LEVELS) + " |",
             "|---|---|---|" + "---|" * len(LEVELS)]
    for name, run in runs.items():
        levels = run.get("reward_by_difficulty", {})
        lines.append(f"| {name} | {run['decisions']} | {cell(run['parts'].get('reward'))} | "
                     + " | ".join(cell(levels.get(lv)) for lv in LEVELS) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", choices=["credit", "rewards"])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.table == "credit":
        print("\n".join(credit_table(args.files)))
    else:
        for path in args.files:
            print("\n".join(reward_table(path)))


if __name__ == "__main__":
    main()
