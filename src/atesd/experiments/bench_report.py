"""The bench's report: `bench.json`, `BENCHMARKS-toy.md` and four PNGs from the runs' result.json.

Written by `atesd.experiments.bench.run_bench` into the bench folder:
  bench.json               the command, machine, date, budget and every run's result
  BENCHMARKS-toy.md        a markdown section: test Average@k per method (mean ± std over seeds),
                           the chosen step and rollout tokens, accuracy per difficulty, the paired
                           differences against the untrained base and against OPSD (overall and
                           per difficulty; and, for the learned controllers, against random
                           exposure), rollout tokens to reach GRPO's final accuracy
  bench_accuracy.png       test Average@k per method, bars with ± std over seeds
  bench_per_difficulty.png test Average@k against difficulty, one line per method
  bench_tokens.png         validation Average@k against cumulative rollout tokens, per method
  bench_ratios.png         the reveal ratio α per step of the learned-exposure runs

The statistics behind the tables are `atesd.experiments.bench_stats`'s.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atesd import atomic
from atesd.experiments.bench_stats import (BASE, RANDOM, REFERENCE, TOKEN_TARGET, by_method, difficulties,
                                           identical_variants, mean_std, over_seeds, paired_by_difficulty,
                                           paired_vs_reference, per_seed_differences, problem_levels, run_test,
                                           seed_unit_cell, tokens_to_reach)
from atesd.experiments.report import save_figure

MARKDOWN_FILE = "BENCHMARKS-toy.md"
BENCH_JSON = "bench.json"
PLOTS = ("bench_accuracy.png", "bench_per_difficulty.png", "bench_tokens.png", "bench_ratios.png")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _final_beta_table(groups: dict[str, list[dict]]) -> list[str]:
    """The learned Beta's mean E[α] = a / (a + b) at each run's last decision (`final_beta_mean`),
    overall and per level: the mean over seeds, then each seed's value."""
    learned = {name: runs for name, runs in groups.items() if all(r.get("final_beta_mean") for r in runs)}
    if not learned:
        return []
    levels = sorted({lv for runs in learned.values() for r in runs for lv in r["final_beta_mean"]["by_difficulty"]})

    def cell(values: list[float]) -> str:
        return f"{statistics.fmean(values):.2f} [" + ", ".join(f"{v:.2f}" for v in values) + "]" if values else "–"

    lines = ["", "### The learned Beta's mean at the last decision", "",
             "E[α] = a / (a + b) of the controller's Beta at its last decision, overall and, for per-level policies, "
             "each level's last value: the mean over seeds [each seed].", "",
             "| " + " | ".join(["method", "overall", *(f"difficulty {lv}" for lv in levels)]) + " |",
             "|" + " --- |" * (2 + len(levels))]
    for name, runs in learned.items():
        finals = [r["final_beta_mean"] for r in runs]
        cells = [cell([f["by_difficulty"][lv] for f in finals if lv in f["by_difficulty"]]) for lv in levels]
        lines.append("| " + " | ".join([name, cell([f["all"] for f in finals]), *cells]) + " |")
    return lines


def markdown(groups: dict[str, list[dict]], meta: dict, plots: Sequence[str] = PLOTS) -> str:
    """The BENCHMARKS-toy.md section; `plots`: PNG file names to show at its end."""
    budget, machine = meta["budget"], meta["machine"]
    k = budget["test"]["k"]
    lines = [
        "## Toy suite", "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['threads']} threads), Python {machine['python']}  ",
        f"Date: {meta['date']}  ",
        f"Seeds: {', '.join(str(s) for s in meta['seeds'])}", "",
        f"Budget: every trained method gets {budget['steps']} steps × {budget['prompts_per_step']} "
        f"(prompt, rollout) pairs = {budget['steps'] * budget['prompts_per_step']} rollouts; GRPO samples G "
        f"rollouts per prompt and so sees prompts_per_step / G prompts per step. SFT samples nothing: its "
        f"token counts are the reference tokens it trains on. The checkpoint is chosen by validation "
        f"Average@{budget['val_k']} on {budget['val_problems']} validation problems (every "
        f"{budget['validation_every']} steps and after the last), never on the test split. Test: "
        f"Average@{k} on {budget['test']['n_problems']} {budget['test']['split']} problems, sampling seed "
        f"{budget['test']['seed']} for every run (paired across methods and seeds), temperature "
        f"{budget['test']['temperature']:g}, at most {budget['test']['max_new_tokens']} new tokens "
        f"(protocol {budget['test']['name']}).", "",
        f"### Test Average@{k} (mean ± std over seeds)", "",
        "The checkpoint chosen on validation is the bench's figure; the last step's model is shown beside it "
        "to tell a method's effect apart from the noise of choosing among the validation points.", "",
        f"| method | seeds | test Average@{k} (%), chosen on validation | chosen step | test Average@{k} (%), last step "
        "| rollout tokens to chosen step | rollout tokens in total |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in groups.items():
        acc = mean_std([r["test"]["average_at_k"] for r in runs])
        last = mean_std([run_test(r, "test_last_step")["average_at_k"] for r in runs])
        step = statistics.fmean(r["chosen_step"] for r in runs)
        chosen = statistics.fmean(r["rollout_tokens_to_chosen"] for r in runs)
        total = statistics.fmean(r["rollout_tokens_total"] for r in runs)
        lines.append(f"| {name} | {len(runs)} | {_pct(acc[0])} ± {_pct(acc[1])} | {step:.1f} | {_pct(last[0])} ± {_pct(last[1])} | "
                     f"{chosen:,.0f} | {total:,.0f} |")

    controllers = [name for name, runs in groups.items() if runs[0].get("exposure_policy") == "learned"]
    levels = difficulties([r for runs in groups.values() for r in runs])
    lines += ["", f"### Test Average@{k} by difficulty (%, mean ± std over seeds)", "",
              "| method | " + " | ".join(f"difficulty {d}" for d in levels) + " |",
              "| --- |" + " --- |" * len(levels)]
    for name, runs in groups.items():
        cells = []
        for level in levels:
            values = [r["test"]["per_difficulty"][level]["average_at_k"] for r in runs
                      if level in r["test"]["per_difficulty"]]
            cells.append(f"{_pct(mean_std(values)[0])} ± {_pct(mean_std(values)[1])}" if values else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    for reference, label, short, compared in (
            (BASE, "the base (the warm-started model, untrained)", "base", list(groups)),
            (REFERENCE, "OPSD", "OPSD", list(groups)),
            (RANDOM, "uniformly random exposure (the learned controllers only)", "random", controllers)):
        lines += ["", f"### Paired difference against {label} (test Average@{k}, points)", ""]
        if reference not in groups or not compared:
            lines.append(f"{reference} is not in this bench." if reference not in groups
                         else "No learned controller is in this bench.")
            continue
        lines += ["Two SEs for each difference: the pooled-pairs SE over the (seed, problem) pairs counts the test "
                  "sampling only; the seed as the unit (each seed's Δ, then their mean ± std/√n over seeds) counts the "
                  "training seed too, and is the one to claim a difference with.", "",
                  f"| method | Δ vs {short} | pooled-pairs SE | seed as unit: Δ ± SE | (seed, problem) pairs "
                  f"| significant (abs Δ > 2·pooled SE) | Δ vs {short}, last steps ± pooled SE "
                  "| last steps per seed → their mean ± SE (seed as unit) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name in compared:
            diff = paired_vs_reference(groups, name, reference)
            if diff is not None:
                mean, se, n = diff
                last_mean, last_se, _ = paired_vs_reference(groups, name, reference, "test_last_step")
                per_seed = per_seed_differences(groups, name, reference)
                seed_mean, seed_se, _ = over_seeds(per_seed)
                by_seed = " / ".join(f"{100 * d:+.1f}" for d in per_seed.values()) + (
                    f" → {100 * seed_mean:+.1f} ± {100 * seed_se:.1f}" if seed_se is not None else "")
                chosen_by_seed = seed_unit_cell(per_seed_differences(groups, name, reference, "test"))
                lines.append(f"| {name} | {100 * mean:+.1f} | {100 * se:.1f} | {chosen_by_seed} | {n} | "
                             f"{'yes' if abs(mean) > 2 * se else 'no'} | {100 * last_mean:+.1f} ± {100 * last_se:.1f} "
                             f"| {by_seed} |")

    difficulty = meta.get("test_difficulty") or {}
    if REFERENCE in groups and difficulty:
        levels_present = sorted(set(difficulty.values()))
        lines += ["", f"### Paired difference against OPSD by difficulty (last steps, test Average@{k}, points)", "",
                  "Each cell: the mean ± pooled-pairs SE over the (seed, problem) pairs of one level, then in brackets "
                  "the same level with the seed as the unit (each seed's Δ on the level, mean ± SE over seeds).", "",
                  "| method | " + " | ".join(f"difficulty {lv}" for lv in levels_present) + " |",
                  "| --- |" + " --- |" * len(levels_present)]
        for name in groups:
            cells = paired_by_difficulty(groups, name, difficulty)
            if cells:
                of_level = {lv: {pid for pid, level in difficulty.items() if level == lv} for lv in levels_present}
                lines.append(f"| {name} | " + " | ".join(
                    f"{100 * cells[lv][0]:+.1f} ± {100 * cells[lv][1]:.1f} "
                    f"[{seed_unit_cell(per_seed_differences(groups, name, problems=of_level[lv]))}]"
                    if lv in cells else "–" for lv in levels_present) + " |")

    lines += ["", "### Reveal ratio used (exposure policies)", "",
              "Mean α over all steps and over the last 100 steps of each run (the batch mean for per-example "
              "policies), per seed.", "",
              "| method | mean α, all steps | mean α, last 100 steps | per seed (last 100) |", "| --- | --- | --- | --- |"]
    for name, runs in groups.items():
        ratios = [[ratio for _, ratio in r.get("reveal_ratios", [])] for r in runs]
        if not all(ratios) or all(len(set(rs)) == 1 for rs in ratios):
            continue  # fixed ratios and methods without exposure say nothing here
        overall = statistics.fmean(statistics.fmean(rs) for rs in ratios)
        last = [statistics.fmean(rs[-100:]) for rs in ratios]
        lines.append(f"| {name} | {overall:.2f} | {statistics.fmean(last):.2f} | "
                     + ", ".join(f"{v:.2f}" for v in last) + " |")
    lines += _final_beta_table(groups)
    identical = identical_variants(groups)
    lines += ["", "### Variants that did the same thing", ""]
    lines += ([f"- {a} and {b} gave identical per-problem test results on seed {seed}" for a, b, seed in identical]
              or ["No two methods gave identical per-problem test results on any seed."])

    lines += ["", "### Rollout tokens to reach GRPO's final validation accuracy", ""]
    if TOKEN_TARGET not in groups:
        lines.append("GRPO is not in this bench.")
    else:
        lines += ["| method | rollout tokens (mean over seeds that reached it) | seeds that reached it |",
                  "| --- | --- | --- |"]
        for name in groups:
            hits = tokens_to_reach(groups, name) or []
            reached = [t for t in hits if t is not None]
            shown = f"{statistics.fmean(reached):,.0f}" if reached else "not reached"
            lines.append(f"| {name} | {shown} | {len(reached)}/{len(hits)} |")
    lines += ["", *(f"![{name[:-4]}]({name})" for name in plots), ""]
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    return save_figure(fig, path)


def _colors(n: int) -> list:
    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def plot_accuracy(groups, k: int, path: Path) -> Path:
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    names = list(groups)
    stats = [mean_std([100 * r["test"]["average_at_k"] for r in groups[n]]) for n in names]
    ax.bar(range(len(names)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3, color=_colors(len(names)))
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_ylabel(f"test Average@{k} (%)")
    ax.set_title("Test accuracy per method (mean ± std over seeds)")
    return _save(fig, path)


def plot_per_difficulty(groups, k: int, path: Path) -> Path:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    levels = difficulties([r for runs in groups.values() for r in runs])
    for color, (name, runs) in zip(_colors(len(groups)), groups.items()):
        ys = [statistics.fmean(100 * r["test"]["per_difficulty"][lv]["average_at_k"] for r in runs
                               if lv in r["test"]["per_difficulty"]) for lv in levels]
        ax.plot(levels, ys, marker="o", color=color, label=name)
    ax.set_xlabel("difficulty")
    ax.set_ylabel(f"test Average@{k} (%)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_tokens(groups, val_k: int, path: Path) -> Path:
    """Validation accuracy against cumulative rollout tokens; points averaged over seeds by index."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for color, (name, runs) in zip(_colors(len(groups)), groups.items()):
        curves = [r["val_curve"] for r in runs]
        if name == "base" or not curves[0]:
            base = statistics.fmean(100 * c[0]["val_accuracy"] for c in curves if c)
            ax.axhline(base, color=color, linestyle="--", label=name)
            continue
        n = min(len(c) for c in curves)
        xs = [statistics.fmean(c[i]["tokens"] for c in curves) for i in range(n)]
        ys = [statistics.fmean(100 * c[i]["val_accuracy"] for c in curves) for i in range(n)]
        ax.plot(xs, ys, marker="o", color=color, label=name)
    ax.set_xlabel("cumulative rollout tokens (SFT: reference tokens)")
    ax.set_ylabel(f"validation Average@{val_k} (%)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_ratios(groups, path: Path) -> Path | None:
    learned = {n: runs for n, runs in groups.items() if runs[0].get("exposure_policy") == "learned"}
    if not learned:
        path.unlink(missing_ok=True)
        return None
    fig = Figure(figsize=(4 * len(learned), 3.5))
    for i, (name, runs) in enumerate(learned.items()):
        ax = fig.add_subplot(1, len(learned), i + 1)
        for run in runs:
            steps = [s for s, _ in run["reveal_ratios"]]
            ax.plot(steps, [a for _, a in run["reveal_ratios"]], label=f"seed {run['seed']}")
        ax.set_ylim(0, 1.05)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("reveal ratio α")
        ax.legend(fontsize=7)
    return _save(fig, path)


def write_report(out: Path, results: Sequence[dict], meta: dict) -> list[Path]:
    """bench.json, BENCHMARKS-toy.md and the PNGs into `out`; returns the paths written."""
    groups = by_method(results, meta["methods"])
    meta = {**meta, "test_difficulty": problem_levels(meta)}  # kept in bench.json: the report recomputes from it alone
    budget = meta["budget"]
    plots = [plot_accuracy(groups, budget["test"]["k"], out / PLOTS[0]),
             plot_per_difficulty(groups, budget["test"]["k"], out / PLOTS[1]),
             plot_tokens(groups, budget["val_k"], out / PLOTS[2]),
             plot_ratios(groups, out / PLOTS[3])]
    plots = [p for p in plots if p is not None]
    atomic.write_json(out / BENCH_JSON, {**meta, "results": list(results)})
    markdown_path = atomic.write_text(out / MARKDOWN_FILE, markdown(groups, meta, [p.name for p in plots]))
    return [out / BENCH_JSON, markdown_path, *plots]
