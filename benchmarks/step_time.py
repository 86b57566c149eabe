"""Step time of ATESD (learned exposure controller) against OPSD (fixed full reveal) on a toy model.

Both run through `atesd.train.train` from `configs/toy-opsd.yaml` / `configs/toy-atesd.yaml` with
overrides (a random-weight toy Qwen3, no warm start, short rollouts). Runs are interleaved
(OPSD, ATESD, OPSD, ATESD, ...) so that load from other users of the machine hits both alike. From
each run's metrics.jsonl: median `timing/step_s` after the first `skip` steps, the ATESD-only cost
`timing/probe_s + timing/grounding_s` (probe NLL and grounding score g_t), and `train/tokens_per_s`.
`timing/step_s` covers α decision, rollout, loss, probe, update and controller update; not checkpoints.

    python benchmarks/step_time.py           # 2 × (OPSD, ATESD) runs of 12 steps, 16 prompts × 64 tokens
    python benchmarks/step_time.py --quick   # tiny sizes, CI smoke
    python benchmarks/step_time.py --controller qwen3-recipe --probe-size 16
        # ATESD with the Qwen3 recipes' controller (configs/qwen3-1.7b-atesd.yaml's exposure section:
        # discounted probe-NLL progress + grounding score, no counterfactual credit) at their probe size
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import progress, publish, table  # noqa: E402
from bench_world import build_bench_world  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FULL = {"preset": "toy-1m", "steps": 12, "skip": 2, "prompts_per_step": 32, "max_new_tokens": 64,
        "repeats": 2, "probe_size": 8}
QUICK = {"preset": "toy-test", "steps": 3, "skip": 1, "prompts_per_step": 4, "max_new_tokens": 8,
         "repeats": 1, "probe_size": 4}
GOAL_RATIO = 1.10
METHODS = {  # name → (base config, overrides that pin the method)
    "OPSD": ("configs/toy-opsd.yaml", ["exposure.policy=fixed", "exposure.reveal_ratio=1.0"]),
    "ATESD": ("configs/toy-atesd.yaml", ["exposure.policy=learned"]),
}


def recipe_controller() -> list[str]:
    """The exposure section of configs/qwen3-1.7b-atesd.yaml as overrides (probe_size excepted:
    --probe-size sets it)."""
    from omegaconf import OmegaConf

    exposure = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "qwen3-1.7b-atesd.yaml"))["exposure"]
    return [f"exposure.{key}={value}" for key, value in exposure.items() if key != "probe_size"]


def run_once(method: str, sizes: dict, model_dir: Path, train_file: Path, out_dir: Path) -> list[dict]:
    """One training run; returns its metrics.jsonl records."""
    from atesd.config import load_config
    from atesd.train import train

    base, pinned = METHODS[method]
    if method == "ATESD" and sizes.get("controller") == "qwen3-recipe":
        pinned = recipe_controller()
    overrides = [
        f"model.name_or_path={model_dir}", f"data.train={train_file}", "data.val=null",
        f"steps={sizes['steps']}", f"prompts_per_step={sizes['prompts_per_step']}",
        f"rollout.max_new_tokens={sizes['max_new_tokens']}", "rollout.temperature=1.0",
        "rollout.top_p=1.0", "rollout.top_k=0", f"exposure.probe_size={sizes['probe_size']}",
        f"save_every={sizes['steps'] + 1}", "progress=false", f"output_dir={out_dir}", *pinned,
    ]
    cfg = load_config(REPO / base, overrides)
    train(cfg)
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(sizes: dict, threads: int, work_dir: Path) -> dict:
    import torch

    torch.set_num_threads(threads)
    progress(f"step_time: building a {sizes['preset']} world (random weights) in {work_dir}")
    model_dir, train_file = build_bench_world(work_dir / "world", sizes["preset"])
    runs = []
    for repeat in range(sizes["repeats"]):
        for method in METHODS:
            progress(f"step_time: {method} run {repeat + 1}/{sizes['repeats']} ({sizes['steps']} steps)")
            records = run_once(method, sizes, model_dir, train_file, work_dir / f"{method}-{repeat}")
            kept = records[sizes["skip"]:]
            runs.append({
                "method": method, "repeat": repeat,
                "step_s": [r["timing/step_s"] for r in kept],
                "exposure_s": [r.get("timing/probe_s", 0.0) + r.get("timing/grounding_s", 0.0)
                               + r.get("timing/credit_s", 0.0) for r in kept],
                "rollout_s": [r["timing/sample_s"] for r in kept],
                "loss_s": [r["timing/loss_s"] for r in kept],
                "tokens_per_s": [r["train/tokens_per_s"] for r in kept],
                "reveal_ratio": [r["exposure/reveal_ratio"] for r in kept],
                "completion_length": [r["rollout/completion_length"] for r in kept],
            })
            progress(f"  median step {statistics.median(runs[-1]['step_s']):.3f} s")
    summary = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        pooled = {key: [v for r in mine for v in r[key]] for key in
                  ("step_s", "exposure_s", "rollout_s", "loss_s", "tokens_per_s")}
        summary[method] = {
            "median_step_s": _median(pooled["step_s"]),
            "median_step_s_per_repeat": [_median(r["step_s"]) for r in mine],
            "median_exposure_s": _median(pooled["exposure_s"]),
            "median_rollout_s": _median(pooled["rollout_s"]),
            "median_loss_s": _median(pooled["loss_s"]),
            "median_tokens_per_s": _median(pooled["tokens_per_s"]),
            "mean_reveal_ratio": statistics.fmean(v for r in mine for v in r["reveal_ratio"]),
            "mean_completion_length": statistics.fmean(v for r in mine for v in r["completion_length"]),
            "steps_timed": len(pooled["step_s"]),
        }
    ratio = summary["ATESD"]["median_step_s"] / summary["OPSD"]["median_step_s"]
    return {"benchmark": "step_time", "sizes": sizes, "threads": threads, "runs": runs, "summary": summary,
            "ratio_atesd_over_opsd": ratio, "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO}


def to_markdown(result: dict) -> str:
    s, summary = result["sizes"], result["summary"]
    rows = [[m, v["median_step_s"], " / ".join(f"{x:.3f}" for x in v["median_step_s_per_repeat"]),
             v["median_rollout_s"], v["median_loss_s"], v["median_exposure_s"], round(v["median_tokens_per_s"]),
             v["mean_reveal_ratio"], v["mean_completion_length"], v["steps_timed"]] for m, v in summary.items()]
    return "\n".join([
        "### Step time: ATESD vs OPSD (toy model, `atesd.train.train`)",
        "",
        f"{s['preset']} with random weights, {s['prompts_per_step']} prompts/step × up to {s['max_new_tokens']} new "
        f"tokens (temperature 1, top-p 1, top-k 0), {s['steps']} steps per run, first {s['skip']} skipped, "
        f"{s['repeats']} interleaved runs per method, exposure.probe_size={s['probe_size']}, "
        f"{result['threads']} torch thread(s), ATESD controller: {s.get('controller', 'toy')}. "
        "Medians over all timed steps.",
        "",
        table(["method", "step s", "per-run medians", "rollout s", "loss s", "probe + grounding s",
               "tokens/s", "mean α", "mean completion tokens", "steps"], rows),
        "",
        f"ATESD / OPSD step time: **{result['ratio_atesd_over_opsd']:.3f}×** (goal ≤ {result['goal_ratio']:.2f}: "
        f"**{'met' if result['goal_met'] else 'not met'}**). ATESD-only work (probe NLL, grounding score, credit) is "
        f"{summary['ATESD']['median_exposure_s']:.3f} s/step, "
        f"{100 * summary['ATESD']['median_exposure_s'] / summary['OPSD']['median_step_s']:.1f}% of an OPSD step.",
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke, < 60 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least hurt by other load)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--prompts-per-step", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--probe-size", type=int, default=None, help="exposure.probe_size (ATESD probe sequences)")
    parser.add_argument("--controller", choices=["toy", "qwen3-recipe"], default="toy",
                        help="ATESD's controller: configs/toy-atesd.yaml's, or the Qwen3 recipes'")
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="also write the result dict here")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("steps", "repeats", "prompts_per_step", "max_new_tokens", "probe_size"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.controller != "toy":
        sizes["controller"] = args.controller
    with tempfile.TemporaryDirectory(prefix="atesd-step-time-") as tmp:
        result = run(sizes, args.threads, Path(args.work_dir or tmp))
    return publish(result, to_markdown, args.json)


if __name__ == "__main__":
    main()
