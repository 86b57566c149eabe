"""benchmarks/controller_figures.py: the controller tables of docs/toy-world.md recomputed from the
committed JSON reproduce the figures the docs print."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from controller_figures import credit_table, reward_table  # noqa: E402

FIGURES = REPO / "docs" / "figures" / "controller"


def _docs_rows() -> set[str]:
    return {line.replace("**", "") for line in (REPO / "docs" / "toy-world.md").read_text().splitlines()}


def test_credit_probe_table_recomputed_from_the_committed_credits_is_the_docs_table():
    rows = credit_table([FIGURES / f"credit_probe_step{step}.json" for step in (125, 250, 500)])
    docs = _docs_rows()
    body = [row for row in rows if "problems" in row]
    assert len(body) == 4 and all(row in docs for row in body), body


def test_reward_correlations_of_the_per_difficulty_runs_are_the_docs_figures():
    rows = {row.split(" | ")[0][2:]: row for row in reward_table(FIGURES / "reward_correlations.json")[2:]}
    docs = _docs_rows()
    for seed in (0, 1, 2):  # toy-world 8.4: "| seed | Beta means | corr(α − α′, R), levels 1 … 5 |"
        cells = rows[f"{seed}/atesd-per-difficulty"].strip(" |").split(" | ")[3:]
        levels = " / ".join(cell.split(" (")[0] for cell in cells)
        assert any(line.startswith(f"| {seed} |") and line.endswith(f"| {levels} |") for line in docs), levels
