"""`atesd` command line: parse arguments, dispatch to the library. No logic lives here.

Subcommands: eval, toy build, train, demo, report. A bad input file or config ends with a one-line error
naming the file, line and field (exit code 2), never a raw traceback.
"""

from __future__ import annotations

import argparse
import os
import sys


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="Average@k / pass@k / maj@k of a model on a problem file")
    p.add_argument("--model", required=True, help="local model directory or hub id")
    p.add_argument("--data", required=True, help="problem file (JSONL/JSON/CSV/Parquet) or hub dataset")
    p.add_argument("--split", default=None, help="hub dataset split")
    p.add_argument("--k", type=int, default=8, help="samples per problem")
    p.add_argument("--out", default="eval", help="output directory for eval.json and eval.md")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N problems only")
    p.add_argument("--thinking", action="store_true", help="enable_thinking for the student prompt")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=64)


def _run_eval(args) -> None:
    from atesd.evaluate import run_eval

    report = run_eval(
        args.model, args.data, k=args.k, out_dir=args.out, split=args.split,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, seed=args.seed, limit=args.limit, thinking=args.thinking,
        dtype=args.dtype, batch_size=args.batch_size,
    )
    print(report.to_markdown())
    print(f"wrote {os.path.join(args.out, 'eval.json')}")


def _add_toy(sub) -> None:
    p = sub.add_parser("toy", help="the embedded toy world")
    toy_sub = p.add_subparsers(dest="toy_command", required=True)
    b = toy_sub.add_parser("build", help="generate the task, train the tokenizer, warm-start a tiny Qwen3")
    b.add_argument("--preset", default="toy-1m", help="model preset (toy-1m, toy-5m, toy-test)")
    b.add_argument("--out", default=None, help="copy the built world here (default: the cache only)")
    b.add_argument("--data", default=None, help="warm-start on this problem file instead of the toy task")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-report", action="store_true", help="skip the evaluation tables")


def _run_toy(args) -> None:
    from atesd.toy.build import run_toy_build

    run_toy_build(preset=args.preset, out=args.out, data=args.data, seed=args.seed, report=not args.no_report)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train with a YAML config and key=value overrides")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. exposure.hold_steps=4")


def _run_train(args) -> None:
    from atesd.config import load_config
    from atesd.train import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    print(f"run directory: {result.output_dir}")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="toy world → base eval → training → eval, on 2 CPU cores")
    p.add_argument("--config", default=None, help="training config (default: the packaged toy config)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("overrides", nargs="*")


def _run_demo(args) -> None:
    from atesd.demo import run_demo

    run_demo(config=args.config, out=args.out, overrides=args.overrides)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="PNG plots and a summary of a training run directory")
    p.add_argument("run_dir", help="the output_dir of an `atesd train` run")


def _run_report(args) -> None:
    from atesd.report import make_report, summarize_run

    print(summarize_run(args.run_dir))
    for path in make_report(args.run_dir):
        print(f"wrote {path}")


COMMANDS = {"eval": (_add_eval, _run_eval), "toy": (_add_toy, _run_toy),
            "train": (_add_train, _run_train), "demo": (_add_demo, _run_demo),
            "report": (_add_report, _run_report)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atesd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    from atesd.config import ConfigError
    from atesd.data import DataError

    try:
        COMMANDS[args.command][1](args)
    except (DataError, ConfigError, FileNotFoundError) as err:
        print(f"atesd {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
