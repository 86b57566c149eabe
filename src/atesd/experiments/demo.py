"""`atesd demo`: the whole pipeline on the embedded toy world, on 2 CPU cores.

1. build the toy world (or find it in the cache),
2. evaluate the warm-started base on held-out test problems (sampled Average@k),
3. train with the demo config (ATESD by default),
4. evaluate the trained model on the same problems with the same sampling seeds,
5. print the before/after table with the paired difference, the learned reveal-ratio trajectory,
   and draw the run's plots.
"""

from __future__ import annotations

import json
from pathlib import Path

from atesd import atomic
from atesd.config import load_config
from atesd.data import load_problems
from atesd.evaluate import evaluate, paired_difference
from atesd.rollout.base import SamplingParams
from atesd.toy.paths import resolve_toy_paths
from atesd.train import train

DEFAULT_CONFIG = "configs/toy-atesd.yaml"


def _evaluate_dir(model_dir: Path, problems, k: int, cfg, label: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=1.0, seed=cfg.seed)
    print(f"[demo] evaluating {label}: {len(problems)} test problems x {k} samples")
    return evaluate(model, tokenizer, problems, k=k, sampling=sampling, prompt_cfg=cfg.prompts,
                    score_workers=0, meta={"model": str(model_dir)})


def _trajectory(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "exposure.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["decision_step"], r["reveal_ratio"]) for r in records if r.get("event") == "decision"]


def summarise_ratios(trajectory: list[tuple[int, float]], block: int = 100) -> str:
    """The reveal ratios a run used, as the mean per block of `block` training steps."""
    groups: dict[int, list[float]] = {}
    for step, ratio in trajectory:
        groups.setdefault(step // block, []).append(ratio)
    return ", ".join(f"steps {b * block}-{(b + 1) * block - 1}: {sum(r) / len(r):.2f} ({len(r)} decisions)"
                     for b, r in sorted(groups.items()))


def run_demo(config: str | None = None, out: str = "runs/demo", overrides: list[str] | None = None,
             n_problems: int | None = None, k: int = 4) -> dict:
    config = config or DEFAULT_CONFIG
    if not Path(config).is_file():
        raise FileNotFoundError(f"{config}: demo config not found (run from the repository root or pass --config)")
    cfg = load_config(config, [f"output_dir={out}", *(overrides or [])])
    print("[demo] building (or reusing) the toy world ...")
    cfg = resolve_toy_paths(cfg)
    world = Path(cfg.model.name_or_path)
    test = load_problems(str(world / "data" / "test.jsonl"))[:n_problems]  # None: all of them

    before = _evaluate_dir(world, test, k, cfg, "the warm-started base")
    print(f"[demo] training {cfg.steps} steps ({cfg.exposure.policy} exposure) into {out}")
    result = train(cfg)
    after = _evaluate_dir(result.output_dir / "final", test, k, cfg, "the trained model")

    diff, se = paired_difference(before.per_problem_accuracy, after.per_problem_accuracy)
    rows = [("overall", before.average_at_k, after.average_at_k)]
    for level in sorted(before.per_difficulty):
        rows.append((f"difficulty {level}", before.per_difficulty[level].average_at_k,
                     after.per_difficulty[level].average_at_k))
    print(f"\n| held-out Average@{k} | base | after {cfg.exposure.policy} |\n|---|---|---|")
    for name, b, a in rows:
        print(f"| {name} | {100 * b:.1f}% | {100 * a:.1f}% |")
    print(f"\npaired difference: {100 * diff:+.1f} ± {100 * se:.1f} points (SE over {len(test)} problems)")

    trajectory = _trajectory(result.output_dir)
    if trajectory:
        print(f"reveal ratio ({cfg.exposure.policy}), mean per 100 steps: {summarise_ratios(trajectory)}; "
              f"every decision in {result.output_dir / 'exposure.jsonl'}")
    from atesd.experiments.report import make_report

    plots = make_report(result.output_dir)
    print(f"plots: {', '.join(str(p) for p in plots)}")
    summary = {"base": before.average_at_k, "trained": after.average_at_k, "paired_difference": diff,
               "paired_se": se, "k": k, "n_problems": len(test), "reveal_ratios": trajectory}
    atomic.write_json(result.output_dir / "demo.json", summary)
    return summary
