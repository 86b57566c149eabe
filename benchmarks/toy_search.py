"""The toy-world search behind docs/toy-world.md: build a world variant, then measure a training run.

    # a toy world whose warm start differs from the default (JSON overrides of WarmStartConfig)
    python benchmarks/toy_search.py world --warm-start '{"student_max_level": null}' --out /tmp/w
    # or whose task does (JSON overrides of TaskConfig): references in the terse notation
    python benchmarks/toy_search.py world --task '{"reference_style": "terse"}' --out /tmp/w
    # a training run on it and the paired change of held-out sampled Average@8 it causes
    python benchmarks/toy_search.py distill --world /tmp/w --config configs/toy-opsd.yaml \
        loss.divergence=reverse_kl optim.lr=3e-5

`world` prints the student / teacher / headroom tables (atesd.experiments.world_report, first --n test problems).
`distill` evaluates the world's model once (cached in the world as base_eval_<n>_<k>.json), trains
with the config and the `key=value` overrides, evaluates the final model on the same test problems
with the same sampling seed, and prints one RESULT line: base, after, the paired change ± its
standard error (over problems), per difficulty, plus the first and last ten steps' mean rollout
accuracy, divergence, top-1 disagreement and entropies. `--train-max-level L` trains only on train
problems of difficulty <= L (a curriculum choice a real run could make: datasets carry levels).
Results are appended to --log as JSON lines, with the per-problem accuracies:

    # paired difference between two logged runs (A - B), e.g. two reveal ratios
    python benchmarks/toy_search.py compare K-rkl-3e5-500-r0.25-s0 K-rkl-3e5-500-s0@500
    # the learning curve of a run that kept checkpoints (save_every=100 keep_checkpoints=5)
    python benchmarks/toy_search.py checkpoints --name K-rkl-3e5-500-s0 --n 500
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


def build_world(args) -> None:
    from atesd.toy.build import ToyWorldConfig, build_toy_world, copy_world
    from atesd.experiments.world_report import toy_world_report
    from atesd.toy.task import TaskConfig
    from atesd.toy.warmstart import WarmStartConfig

    cfg = ToyWorldConfig(preset=args.preset, seed=args.seed, threads=args.threads,
                         task=replace(TaskConfig(), **json.loads(args.task)),
                         warm_start=replace(WarmStartConfig(), **json.loads(args.warm_start)))
    started = time.time()
    world = build_toy_world(cfg, progress=False)
    if args.out:
        world = copy_world(world, args.out)
    print(f"world {world} built in {time.time() - started:.0f} s (cached builds return at once)", flush=True)
    from atesd.experiments.protocol import TOY_PROTOCOL

    protocol = replace(TOY_PROTOCOL, n_problems=args.n, k=args.k)
    report = toy_world_report(world, protocol, headroom_steps=args.headroom_steps,
                              progress=False, threads=args.threads)
    print(report.to_markdown())


def _train_subset(world: Path, max_level: int) -> Path:
    from atesd.data import load_problems, write_problems

    path = world / "data" / f"train_max_level_{max_level}.jsonl"
    if not path.is_file():
        problems = load_problems(world / "data" / "train.jsonl")
        write_problems(path, [p for p in problems if p.difficulty is not None and p.difficulty <= max_level])
    return path


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(sum(values) / len(values), 4) if values else None


def _test_eval(world: Path, cfg, n: int, k: int):
    """A function model -> EvalReport on the first n test problems under the toy protocol
    (atesd.experiments.protocol: T = 1, sampling seed 1234), and the base model's evaluation (cached
    in the world as base_eval_<n>_<k>.json)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from atesd.experiments.protocol import TOY_PROTOCOL, evaluate_under

    protocol = replace(TOY_PROTOCOL, n_problems=n, k=k, max_new_tokens=cfg.rollout.max_new_tokens)
    test = protocol.problems(world / "data")
    tokenizer = AutoTokenizer.from_pretrained(world)

    def run_eval(model):
        return evaluate_under(protocol, model, test, cfg.prompts, tokenizer=tokenizer)

    base_file = world / f"base_eval_{n}_{k}.json"
    if not base_file.is_file():
        report = run_eval(AutoModelForCausalLM.from_pretrained(world))
        per_difficulty = {level: r.average_at_k for level, r in report.per_difficulty.items()}
        base_file.write_text(json.dumps({"accuracy": report.average_at_k, "per_problem": report.per_problem_accuracy,
                                         "per_difficulty": per_difficulty}))
    return run_eval, json.loads(base_file.read_text())


def distill(args) -> None:
    import torch

    from atesd.config import load_config
    from atesd.evaluate import paired_difference
    from atesd.experiments.report import read_jsonl
    from atesd.train import train

    torch.set_num_threads(args.threads)
    world = Path(args.world)
    train_file = _train_subset(world, args.train_max_level) if args.train_max_level else world / "data" / "train.jsonl"
    out = Path(args.runs) / args.name
    cfg = load_config(args.config, [f"model.name_or_path={world}", f"data.train={train_file}",
                                    f"data.val={world / 'data' / 'val.jsonl'}", f"output_dir={out}",
                                    "progress=false", "save_every=100000", *args.overrides])
    run_eval, base = _test_eval(world, cfg, args.n, args.k)
    started = time.time()
    result = train(cfg)
    seconds = time.time() - started
    after = run_eval(result.model)
    change, se = paired_difference(base["per_problem"], after.per_problem_accuracy)
    rows = list(read_jsonl(out / "metrics.jsonl"))
    keys = ("rollout/accuracy", "train/divergence_mean", "train/top1_disagreement", "train/student_entropy",
            "train/teacher_entropy")
    record = {"name": args.name, "world": str(world), "config": args.config, "overrides": args.overrides,
              "train_max_level": args.train_max_level, "base": base["accuracy"], "after": after.average_at_k,
              "change": change, "standard_error": se,
              "after_per_difficulty": {k: v.average_at_k for k, v in after.per_difficulty.items()},
              "base_per_difficulty": base["per_difficulty"], "train_seconds": round(seconds),
              "first10": {k: _mean(rows[:10], k) for k in keys}, "last10": {k: _mean(rows[-10:], k) for k in keys},
              "per_problem": after.per_problem_accuracy}
    print(f"RESULT {args.name}: base {100 * record['base']:.1f}% after {100 * after.average_at_k:.1f}% "
          f"change {100 * change:+.1f} ± {100 * se:.1f} points; after per difficulty "
          f"{[round(100 * v) for v in record['after_per_difficulty'].values()]} "
          f"(base {[round(100 * v) for v in base['per_difficulty'].values()]}); {seconds:.0f} s", flush=True)
    print("  first 10 steps", record["first10"], "\n  last 10 steps", record["last10"], flush=True)
    with open(args.log, "a") as log:
        log.write(json.dumps(record) + "\n")


def checkpoints(args) -> None:
    """Evaluate every checkpoint a `distill` run kept (save_every=N keep_checkpoints=M): the learning
    curve, written to <run>/checkpoint_evals.json with per-problem accuracies."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from atesd.config import load_config
    from atesd.evaluate import paired_difference

    torch.set_num_threads(args.threads)
    run = Path(args.runs) / args.name
    cfg = load_config(run / "config.yaml")
    world = Path(cfg.model.name_or_path)
    run_eval, base = _test_eval(world, cfg, args.n, args.k)
    model = AutoModelForCausalLM.from_pretrained(world)  # each checkpoint's weights are loaded into it
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()  # saved once, as the embedding
    curve = []
    for step_dir in sorted((run / "checkpoints").glob("step-*")):
        loaded = model.load_state_dict(load_file(step_dir / "model.safetensors"), strict=False)
        if loaded.unexpected_keys or set(loaded.missing_keys) - tied:
            raise SystemExit(f"{step_dir}: weights do not match the world's model ({loaded})")
        report = run_eval(model)
        change, se = paired_difference(base["per_problem"], report.per_problem_accuracy)
        step = int(step_dir.name.split("-")[1])
        curve.append({"step": step, "accuracy": report.average_at_k, "change": change, "standard_error": se,
                      "per_problem": report.per_problem_accuracy})
        print(f"CHECKPOINT {args.name} step {step}: {100 * report.average_at_k:.1f}% "
              f"change {100 * change:+.1f} ± {100 * se:.1f} points", flush=True)
    (run / "checkpoint_evals.json").write_text(json.dumps({"n": args.n, "k": args.k, "base": base["accuracy"],
                                                           "curve": curve}))


def compare(args) -> None:
    """Paired difference between two runs' held-out accuracies (same problems, same sampling seed). A
    name is a run logged by `distill`, or `<run>@<step>`: a checkpoint evaluated by `checkpoints`."""
    from atesd.evaluate import paired_difference

    runs = {}
    for line in Path(args.log).read_text().splitlines():
        record = json.loads(line)
        if "per_problem" in record:
            runs[record["name"]] = record["per_problem"]
    for name in (args.a, args.b):
        if "@" in name:
            run = name.rsplit("@", 1)[0]
            evals = Path(args.runs) / run / "checkpoint_evals.json"
            if evals.is_file():
                runs.update({f"{run}@{p['step']}": p["per_problem"]
                             for p in json.loads(evals.read_text())["curve"]})
    missing = [name for name in (args.a, args.b) if name not in runs]
    if missing:
        raise SystemExit(f"{args.log}: no per-problem results for {', '.join(missing)}")
    if len(runs[args.a]) != len(runs[args.b]):
        raise SystemExit(f"{args.a} and {args.b} were evaluated on different numbers of problems")
    change, se = paired_difference(runs[args.b], runs[args.a])
    print(f"COMPARE {args.a} - {args.b}: {100 * change:+.1f} ± {100 * se:.1f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("world", help="build a toy world variant and print its tables")
    w.add_argument("--preset", default="toy-1m")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--warm-start", default="{}", help="JSON object of WarmStartConfig overrides")
    w.add_argument("--task", default="{}", help='JSON object of TaskConfig overrides, e.g. {"reference_style": "terse"}')
    w.add_argument("--out", default=None, help="copy the world here (default: stay in the cache)")
    w.add_argument("--n", type=int, default=500, help="test problems for the tables (the toy protocol: 500)")
    w.add_argument("--k", type=int, default=8, help="samples per problem for the student table (the toy protocol: 8)")
    w.add_argument("--headroom-steps", type=int, default=300)
    w.add_argument("--threads", type=int, default=2, help="torch threads (part of the world's cache key)")
    w.set_defaults(func=build_world)
    d = sub.add_parser("distill", help="train on a world and print the paired change of held-out accuracy")
    d.add_argument("--world", required=True)
    d.add_argument("--config", default="configs/toy-opsd.yaml")
    d.add_argument("--name", required=True, help="run name (runs/<name>)")
    d.add_argument("--runs", default="runs/toy-search")
    d.add_argument("--n", type=int, default=500, help="first n test problems (the toy protocol: 500)")
    d.add_argument("--k", type=int, default=8, help="samples per problem (Average@k)")
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--train-max-level", type=int, default=None)
    d.add_argument("--log", default="runs/toy-search/results.jsonl")
    d.add_argument("overrides", nargs="*", help="key=value config overrides")
    d.set_defaults(func=distill)
    c = sub.add_parser("checkpoints", help="evaluate every checkpoint a distill run kept (the learning curve)")
    c.add_argument("--name", required=True)
    c.add_argument("--runs", default="runs/toy-search")
    c.add_argument("--n", type=int, default=500)
    c.add_argument("--k", type=int, default=8)
    c.add_argument("--threads", type=int, default=2)
    c.set_defaults(func=checkpoints)
    p = sub.add_parser("compare", help="paired difference of two logged runs: A - B")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--log", default="runs/toy-search/results.jsonl")
    p.add_argument("--runs", default="runs/toy-search")
    p.set_defaults(func=compare)
    args = parser.parse_args()
    if getattr(args, "log", None):
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
