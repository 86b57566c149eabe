"""The bench's statistics: grouping runs by method, paired differences against a reference, the seed
as the unit, per-difficulty cells, tokens to reach GRPO, identical variants.

Statistics (ours):
  1. std is the sample standard deviation over seeds (0 for one seed).
  2. A paired difference (against the base or OPSD) pools the (seed, test problem) pairs of the seeds both
     methods ran and calls `atesd.evaluate.paired_difference` on them: its SE is the test-sampling
     noise given the trained models, not the training-seed variance (the std column shows that).
     Beside it, the seed as the unit (`over_seeds`): each seed's Δ (the mean over the test problems),
     then their mean ± std/√n over the seeds, which holds the training noise too.
  3. "Tokens to reach GRPO": per seed, the threshold is GRPO's validation accuracy at its last
     validation; a run reaches it at the cumulative rollout tokens of its first validation point at
     or above it. The table shows the mean over the seeds that reached it and how many did.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Collection, Sequence

from atesd.evaluate import paired_difference

REFERENCE = "opsd"
BASE = "base"
RANDOM = "random"
TOKEN_TARGET = "grpo"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) of the values; std 0 for a single value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def by_method(results: Sequence[dict], order: Sequence[str]) -> dict[str, list[dict]]:
    """Results grouped by method in the bench's order, each group sorted by seed."""
    groups = {name: sorted((r for r in results if r["method"] == name), key=lambda r: r["seed"]) for name in order}
    return {name: runs for name, runs in groups.items() if runs}


def difficulties(results: Sequence[dict]) -> list[str]:
    keys = {key for r in results for key in r["test"]["per_difficulty"]}

    def order(key: str):
        try:
            return (0, float(key))
        except ValueError:
            return (1, 0.0)

    return sorted(keys, key=lambda k: (order(k), k))


def run_test(run: dict, key: str) -> dict:
    """A run's test evaluation: "test" (the checkpoint chosen on validation) or "test_last_step"
    (the last step's; the base, which does not train, and older results fall back to "test")."""
    return run.get(key) or run["test"]


def _pooled_pairs(groups: dict[str, list[dict]], name: str, reference_name: str,
                  key: str) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """(reference, method) per-problem accuracies over the (seed, problem) pairs of the seeds both ran,
    keyed "seed/problem id", and each key's problem id."""
    reference = {r["seed"]: run_test(r, key)["per_problem_accuracy"] for r in groups[reference_name]}
    before, after, problem = {}, {}, {}
    for run in groups[name]:
        if run["seed"] in reference:
            for pid, accuracy in run_test(run, key)["per_problem_accuracy"].items():
                pair = f"{run['seed']}/{pid}"
                before[pair], after[pair], problem[pair] = reference[run["seed"]][pid], accuracy, pid
    return before, after, problem


def paired_vs_reference(groups: dict[str, list[dict]], name: str, reference_name: str = REFERENCE,
                        key: str = "test") -> tuple[float, float, int] | None:
    """(mean, SE, pairs) of method − reference (OPSD, or the untrained base) over the pooled
    (seed, problem) pairs (statistic 2), on the chosen checkpoints (key "test") or the last steps."""
    if reference_name not in groups or name == reference_name:
        return None
    before, after, _ = _pooled_pairs(groups, name, reference_name, key)
    if not before:
        return None
    mean, se = paired_difference(before, after)
    return mean, se, len(before)


def per_seed_differences(groups: dict[str, list[dict]], name: str, reference_name: str = REFERENCE,
                         key: str = "test_last_step", problems: Collection[str] | None = None) -> dict[int, float]:
    """Per seed both ran: the mean over the test problems (or only those in `problems`, e.g. one
    difficulty level's) of method − reference (that seed's Δ)."""
    if reference_name not in groups or name == reference_name:
        return {}
    before, after, problem = _pooled_pairs(groups, name, reference_name, key)
    by_seed: dict[int, list[float]] = {}
    for pair in before:  # pairs are keyed "seed/problem id"
        if problems is None or problem[pair] in problems:
            by_seed.setdefault(int(pair.split("/", 1)[0]), []).append(after[pair] - before[pair])
    return {seed: statistics.fmean(deltas) for seed, deltas in by_seed.items()}


def over_seeds(differences: dict[int, float]) -> tuple[float, float | None, int]:
    """(mean, SE, seeds) of per-seed differences with the seed as the unit: SE = std / √n over the seeds,
    which holds the training noise as well as the test sampling (None for one seed). Needs one seed."""
    values = list(differences.values())
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return statistics.fmean(values), se, len(values)


def seed_unit_cell(differences: dict[int, float]) -> str:
    """"mean ± SE" in points with the seed as the unit (`over_seeds`); "mean (1 seed)" for one seed, "–" for none."""
    if not differences:
        return "–"
    mean, se, n = over_seeds(differences)
    return f"{100 * mean:+.1f} ± {100 * se:.1f}" if se is not None else f"{100 * mean:+.1f} (1 seed)"


def paired_by_difficulty(groups: dict[str, list[dict]], name: str, difficulty: dict[str, int],
                         reference_name: str = REFERENCE, key: str = "test_last_step") -> dict[int, tuple[float, float, int]]:
    """Per difficulty level: (mean, SE, pairs) of method − reference over the pooled (seed, problem)
    pairs of that level (statistic 2 within each level); `difficulty` maps test problem ids to levels."""
    if reference_name not in groups or name == reference_name:
        return {}
    before, after, problem = _pooled_pairs(groups, name, reference_name, key)
    cells = {}
    for level in sorted({difficulty[pid] for pid in problem.values() if pid in difficulty}):
        pairs = [pair for pair, pid in problem.items() if difficulty.get(pid) == level]
        if len(pairs) > 1:
            mean, se = paired_difference({p: before[p] for p in pairs}, {p: after[p] for p in pairs})
            cells[level] = (mean, se, len(pairs))
    return cells


def problem_levels(meta: dict) -> dict[str, int]:
    """Test problem id → difficulty level: from bench.json when it holds them, else from the test split
    in `meta["data_dir"]` (empty when neither is there, or the problems have no levels)."""
    if meta.get("test_difficulty"):
        return dict(meta["test_difficulty"])
    from atesd.experiments.protocol import EvalProtocol

    data_dir = meta.get("data_dir")
    if not data_dir or not Path(data_dir).is_dir():
        return {}
    problems = EvalProtocol(**meta["budget"]["test"]).problems(data_dir)
    return {p.id: p.difficulty for p in problems if p.difficulty is not None}


def tokens_to_reach(groups: dict[str, list[dict]], name: str) -> list[int | None] | None:
    """Per seed of `name`: rollout tokens at its first validation point ≥ GRPO's final validation
    accuracy of that seed, or None when not reached (statistic 3); None without GRPO runs."""
    if TOKEN_TARGET not in groups:
        return None
    targets = {r["seed"]: r["val_curve"][-1]["val_accuracy"] for r in groups[TOKEN_TARGET] if r["val_curve"]}
    reached = []
    for run in groups[name]:
        if run["seed"] not in targets:
            continue
        hits = [p["tokens"] for p in run["val_curve"] if p["val_accuracy"] >= targets[run["seed"]]]
        reached.append(hits[0] if hits else None)
    return reached


def identical_variants(groups: dict[str, list[dict]]) -> list[tuple[str, str, int]]:
    """(method a, method b, seed) whose test per-problem accuracies are identical: two variants that
    differ in config but not in what they did (e.g. the validation chose a step before they diverged)."""
    by_seed: dict[int, dict[str, dict]] = {}
    for name, runs in groups.items():
        for run in runs:
            by_seed.setdefault(run["seed"], {})[name] = run["test"]["per_problem_accuracy"]
    out = []
    for seed, methods in sorted(by_seed.items()):
        names = list(methods)
        for i, a in enumerate(names):
            out += [(a, b, seed) for b in names[i + 1:] if methods[a] == methods[b]]
    return out
