"""`atesd demo`: the whole pipeline on an embedded toy world, on 2 CPU cores.

1. find the toy world (it ships with the package): by default `toy:toy-1m-top-down`, whose references
   are written goal-first, off the student's own order, so that SFT on them falls below the base while
   OPSD rises above it, as on Qwen3 (`--world toy:toy-1m` runs the configs' own world),
2. evaluate the warm-started base under the toy protocol (`atesd.experiments.protocol`: sampled
   Average@8 on the 500 test problems, sampling seed 1234),
3. train with the demo config (ATESD by default),
4. evaluate the trained model under the same protocol (same problems, same sampling seeds),
5. print the before/after table with the paired difference, the reveal ratios the run used, the
   controller's Beta mean over training, the bench's figures under the same protocol for
   comparison (when `docs/figures/bench-toy/bench.json` is there), and draw the run's plots.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from atesd import atomic
from atesd.config import load_config
from atesd.evaluate import paired_difference
from atesd.experiments.protocol import TOY_PROTOCOL, evaluate_under
from atesd.toy.paths import resolve_toy_paths
from atesd.train import train

DEFAULT_CONFIG = "configs/toy-atesd.yaml"
# the demo's world when neither a config nor a world is given: the one that ranks SFT, GRPO, OPSD and random
# exposure as the papers' Qwen3 tables do (docs/toy-world.md section 13); the config's own is toy:toy-1m
DEFAULT_WORLD = "toy:toy-1m-top-down"
BENCH_JSON = "docs/figures/bench-toy/bench.json"
# the committed bench of each shipped world, which the demo quotes under the same protocol
BENCH_JSON_OF_WORLD = {"toy:toy-1m": BENCH_JSON, "toy:toy-1m-top-down": "docs/figures/bench-top-down/bench.json"}


def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "exposure.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _trajectory(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["decision_step"], r["reveal_ratio"]) for r in _records(run_dir) if r.get("event") == "decision"]


def summarise_ratios(trajectory: list[tuple[int, float]], block: int = 100) -> str:
    """The reveal ratios a run used, as the mean per block of `block` training steps."""
    groups: dict[int, list[float]] = {}
    for step, ratio in trajectory:
        groups.setdefault(step // block, []).append(ratio)
    return ", ".join(f"steps {b * block}-{(b + 1) * block - 1}: {sum(r) / len(r):.2f} ({len(r)} decisions)"
                     for b, r in sorted(groups.items()))


def _beta_means(run_dir: Path, block: int = 100) -> str:
    """The learned Beta's mean a/(a+b) per block of steps (learned policies), or ""."""
    means = [(r["decision_step"], r["beta_mean"]) for r in _records(run_dir)
             if r.get("event") == "decision" and "beta_mean" in r]
    return summarise_ratios(means, block).replace(" decisions)", ")") if means else ""


def bench_reference(path: str | Path = BENCH_JSON) -> str:
    """The committed bench's paired gains over the base (same protocol) of its last-step models,
    which the demo's own final model is comparable with, one line, or ""."""
    path = Path(path)
    if not path.is_file():
        return ""
    bench = json.loads(path.read_text())
    if bench.get("budget", {}).get("test") != TOY_PROTOCOL.to_dict():
        return ""
    by_method: dict[str, list[dict]] = {}
    for result in bench["results"]:
        by_method.setdefault(result["method"], []).append(result)
    base = {r["seed"]: r for r in by_method.get("base", [])}
    parts = []
    for name in ("opsd", "random", "atesd", "atesd-per-difficulty"):
        runs = [r for r in by_method.get(name, []) if r["seed"] in base]
        if runs:
            gains = [paired_difference(base[r["seed"]]["test"]["per_problem_accuracy"],
                                       (r.get("test_last_step") or r["test"])["per_problem_accuracy"])[0] for r in runs]
            parts.append(f"{name} {100 * sum(gains) / len(gains):+.1f} ({len(runs)} seed{'s' * (len(runs) > 1)})")
    return "bench, same protocol, last steps, mean gain over the base: " + ", ".join(parts) if parts else ""


def run_demo(config: str | None = None, out: str = "runs/demo", overrides: list[str] | None = None,
             n_problems: int | None = None, k: int | None = None, world: str | None = None) -> dict:
    """world: a toy world to run on instead of the config's (`toy:toy-1m`, `toy:toy-1m-top-down`, or a world
    folder); the config's `toy:` data splits then name that world's. With neither a config nor a world, the
    packaged config runs on DEFAULT_WORLD."""
    if config is None and world is None:
        world = DEFAULT_WORLD
    config = config or DEFAULT_CONFIG
    if not Path(config).is_file():
        raise FileNotFoundError(f"{config}: demo config not found (run from the repository root or pass --config)")
    world_override = [f"model.name_or_path={world}"] if world else []
    raw = load_config(config, [*world_override, f"output_dir={out}", *(overrides or [])])
    cfg = resolve_toy_paths(raw)
    world = Path(cfg.model.name_or_path)
    protocol = replace(TOY_PROTOCOL, **{name: value for name, value in (("n_problems", n_problems), ("k", k))
                                        if value is not None}, max_new_tokens=cfg.rollout.max_new_tokens)
    test = protocol.problems(world / "data")
    print(f"[demo] toy world: {world}")
    print(f"[demo] evaluating the warm-started base: {protocol.describe()}")
    before = evaluate_under(protocol, world, test, cfg.prompts)
    print(f"[demo] training {cfg.steps} steps ({cfg.exposure.policy} exposure) into {out}"
          " (a previous demo run there is moved aside to <out>.old-<time>)")
    result = train(cfg, overwrite=True)
    print("[demo] evaluating the trained model, same protocol")
    after = evaluate_under(protocol, result.output_dir / "final", test, cfg.prompts)

    diff, se = paired_difference(before.per_problem_accuracy, after.per_problem_accuracy)
    rows = [("overall", before.average_at_k, after.average_at_k)]
    for level in sorted(before.per_difficulty):
        rows.append((f"difficulty {level}", before.per_difficulty[level].average_at_k,
                     after.per_difficulty[level].average_at_k))
    print(f"\n| held-out Average@{protocol.k} | base | after {cfg.exposure.policy} |\n|---|---|---|")
    for name, b, a in rows:
        print(f"| {name} | {100 * b:.1f}% | {100 * a:.1f}% |")
    print(f"\npaired difference: {100 * diff:+.1f} ± {100 * se:.1f} points (SE over {len(test)} problems)")
    bench_json = BENCH_JSON_OF_WORLD.get(raw.model.name_or_path)
    same_protocol = protocol == replace(TOY_PROTOCOL, max_new_tokens=protocol.max_new_tokens)
    reference = bench_reference(bench_json) if bench_json and same_protocol else ""
    if reference:
        print(f"for comparison ({reference}): {bench_json}")

    trajectory = _trajectory(result.output_dir)
    if trajectory:
        print(f"reveal ratio ({cfg.exposure.policy}), mean per 100 steps: {summarise_ratios(trajectory)}; "
              f"every decision in {result.output_dir / 'exposure.jsonl'}")
    beta = _beta_means(result.output_dir)
    if beta:
        print(f"learned Beta mean a/(a+b), per 100 steps: {beta}")
    from atesd.experiments.report import make_report

    plots = make_report(result.output_dir)
    print(f"plots: {', '.join(str(p) for p in plots)}")
    summary = {"base": before.average_at_k, "trained": after.average_at_k, "paired_difference": diff,
               "paired_se": se, "k": protocol.k, "n_problems": len(test), "protocol": protocol.to_dict(),
               "reveal_ratios": trajectory}
    atomic.write_json(result.output_dir / "demo.json", summary)
    return summary

