"""Why GRPO loses accuracy on the toy world: one update's effect on its own rollouts, and its runs' curves.

`step`: the training loop's own functions (`atesd.train.sample`, `build_views`, `loss_and_backward`)
draw one batch of GRPO rollouts (prompts × G) on a model and compute the GRPO gradient once; then,
from the same weights and the same gradient, one update is taken with each optimizer setting asked
for (AdamW as in training, whose first step moves every weight by about its learning rate whatever
the gradient's size, or plain SGD), and each rollout's mean token log-prob is measured before and
after. A correct policy gradient, taken small enough, raises the rollouts with a positive advantage
and lowers those with a negative one: it prints, per setting, the mean change for A > 0, A < 0 and
A = 0 and the correlation of the change with A. Repeated over `--batches` batches (the loop's step
seeds 0, 1, ...).

`curves`: per window of steps of GRPO runs' metrics.jsonl, the training reward (rollout/accuracy),
the share of prompts whose G rewards are all equal (no gradient), the mean within-group reward std,
the sampled tokens' mean log-prob (rollout/self_confidence: higher is lower entropy), the
completion length and the gradient norm; then the validation points.

    python benchmarks/grpo_check.py step --model toy:toy-1m --settings adamw:3e-5 adamw:1e-4 sgd:0.01 sgd:1 \
        --out docs/figures/grpo/step_check.json
    python benchmarks/grpo_check.py curves runs/grpo-diag/A-bench runs/grpo-diag/C-lr1e-4-p4 \
        --out docs/figures/grpo/curves.json

`step` takes about a minute per batch on 2 cores; `curves` reads files only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import tempfile
from pathlib import Path

import torch

from atesd.config import load_config
from atesd.objectives import LossStats, group_advantages
from atesd.scoring import completion_hidden, token_logprobs

# `atesd.train` the module (the package exports the function `train` under the same name)
loop = importlib.import_module("atesd.train")


def _mean_token_logprobs(model, views) -> torch.Tensor:
    """[B] each rollout's mean token log-prob under `model` (temperature 1: the toy configs')."""
    with torch.no_grad():
        batch = views.student
        logp = token_logprobs(completion_hidden(model, batch), model.get_output_embeddings().weight,
                              batch.target_ids, 1.0, 1024)
        return LossStats.of(logp, torch.ones_like(logp, dtype=torch.bool), batch).per_rollout()


def _optimizer(setting: str, params, cfg):
    kind, lr = setting.split(":")
    if kind == "adamw":
        o = cfg.optim
        return torch.optim.AdamW(params, lr=float(lr), betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=float(lr))
    raise SystemExit(f"--settings: {setting!r} is not adamw:LR or sgd:LR")


def step_check(args) -> dict:
    from atesd.run import TrainingRun
    from atesd.toy.paths import resolve_toy_paths

    results = {setting: [] for setting in args.settings}
    for batch_index in range(args.batches):
        with tempfile.TemporaryDirectory() as out:
            overrides = [f"model.name_or_path={args.model}", f"prompts_per_step={args.prompts}",
                         f"rollout.num_generations={args.group}", f"output_dir={out}", "progress=false",
                         f"steps={batch_index + 1}", "optim.warmup_steps=0"]
            cfg = resolve_toy_paths(load_config(args.config, overrides))
            run = TrainingRun.start(cfg, False)
            batch, prompts, completions, rollouts, correct = loop.sample(run, batch_index)
            views = loop.build_views(run, batch, prompts, completions, correct, [1.0] * len(batch))
            model = run.unwrapped
            start = {k: v.detach().clone() for k, v in model.state_dict().items()}
            before = _mean_token_logprobs(model, views[0])
            loop.loss_and_backward(run, views, len(batch))
            gradient = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            advantages = group_advantages(torch.tensor(correct, dtype=torch.float32), cfg.rollout.num_generations)
            for setting in args.settings:
                model.load_state_dict(start)
                optimizer = _optimizer(setting, list(model.parameters()), cfg)
                for name, p in model.named_parameters():
                    p.grad = gradient[name].clone() if name in gradient else None
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                change = _mean_token_logprobs(model, views[0]) - before
                signal = advantages != 0
                results[setting].append({
                    "batch": batch_index, "rollouts": len(correct), "correct": int(sum(correct)),
                    "groups_with_signal": int(signal.view(-1, cfg.rollout.num_generations).any(1).sum()),
                    "change_positive": change[advantages > 0].mean().item() if (advantages > 0).any() else None,
                    "change_negative": change[advantages < 0].mean().item() if (advantages < 0).any() else None,
                    "change_zero": change[~signal].mean().item() if (~signal).any() else None,
                    "correlation": torch.corrcoef(torch.stack([change[signal], advantages[signal]]))[0, 1].item()
                    if signal.sum() > 2 else None,
                })
            model.zero_grad(set_to_none=True)
    for setting, rows in results.items():
        pick = lambda key: [r[key] for r in rows if r[key] is not None]  # noqa: E731
        print(f"{setting:>12}: Δ mean log-prob  A>0 {statistics.mean(pick('change_positive')):+.4f}  "
              f"A<0 {statistics.mean(pick('change_negative')):+.4f}  A=0 {statistics.mean(pick('change_zero')):+.4f}  "
              f"corr(Δ, A) {statistics.mean(pick('correlation')):+.2f}  ({len(rows)} batches)")
    return {"command": "step", "model": args.model, "config": args.config, "prompts": args.prompts,
            "group": args.group, "settings": results}


CURVE_KEYS = ("rollout/accuracy", "rollout/zero_advantage_groups", "rollout/group_reward_std",
              "rollout/self_confidence", "rollout/completion_length", "train/grad_norm")


def curves(args) -> dict:
    runs = {}
    for folder in args.runs:
        metrics = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
        windows = []
        for start in range(0, len(metrics), args.window):
            part = metrics[start:start + args.window]
            windows.append({"steps": [part[0]["step"], part[-1]["step"]],
                            **{k: statistics.mean(m[k] for m in part) for k in CURVE_KEYS
                               if all(k in m for m in part)}})
        validation = [{"step": m["step"], "val_average_at_k": m["eval/val_average_at_k"]}
                      for m in metrics if "eval/val_average_at_k" in m]
        runs[folder] = {"windows": windows, "validation": validation}
        print(folder)
        for w in windows:
            print(f"  steps {w['steps'][0]:>4}-{w['steps'][1]:<4}" + "".join(
                f"  {k.split('/')[1]} {w[k]:.3f}" for k in CURVE_KEYS if k in w))
        print("  validation " + ", ".join(f"{v['step']}: {v['val_average_at_k']:.3f}" for v in validation))
    return {"command": "curves", "window": args.window, "runs": runs}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    step = sub.add_parser("step", help="one GRPO update's effect on its own rollouts")
    step.add_argument("--model", default="toy:toy-1m")
    step.add_argument("--config", default="configs/toy-grpo.yaml")
    step.add_argument("--prompts", type=int, default=8, help="prompts per batch (default 8)")
    step.add_argument("--group", type=int, default=8, help="rollouts per prompt G (default 8)")
    step.add_argument("--batches", type=int, default=3, help="batches, each from the same start (default 3)")
    step.add_argument("--settings", nargs="+", default=["adamw:3e-5", "adamw:1e-4", "sgd:0.01", "sgd:1"],
                      help="optimizer:lr settings (default adamw:3e-5 adamw:1e-4 sgd:0.01 sgd:1)")
    step.add_argument("--out", help="write the results as JSON here")
    curve = sub.add_parser("curves", help="per-window training curves of GRPO runs")
    curve.add_argument("runs", nargs="+", help="run folders (holding metrics.jsonl)")
    curve.add_argument("--window", type=int, default=50, help="steps per window (default 50)")
    curve.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = step_check(args) if args.command == "step" else curves(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
