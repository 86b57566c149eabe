"""`atesd` command line: parse arguments, dispatch to the library. No logic lives here.

Subcommands: eval, toy build, train, demo, report, mismatch, bench, diagnose. A bad input file or config ends with a one-line error
naming the file, line and field (exit code 2), never a raw traceback; so do an unreadable model
directory (OSError), a missing optional backend (ImportError) and a division by zero, each on one
line. Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import os
import sys


def _add_eval(sub) -> None:
    from atesd.eval_config import EvalConfig

    d = EvalConfig()  # the defaults, shown in the help
    p = sub.add_parser(
        "eval", help="Average@k / pass@k / maj@k of a model on a problem file",
        description="Flags override the --config file; without --config, --model and --data are required.",
    )
    p.add_argument("--config", default=None, help="eval YAML (see configs/eval/, e.g. configs/eval/aime24.yaml)")
    p.add_argument("--model", default=None, help="local model directory, hub id or toy world (toy:toy-1m)")
    p.add_argument("--protocol", default=None, metavar="NAME",
                   help="a toy protocol by name, e.g. toy-avg8 (the README's toy figures; atesd.experiments.protocol): "
                        "its problems, k, seed and sampling; --data defaults to its split (toy:test); --limit N "
                        "checks its first N problems")
    p.add_argument("--data", default=None,
                   help="problem file (JSONL/JSON/CSV/Parquet), hub dataset or toy split (toy:test); replaces the "
                        "config's data and, unless --split is given too, its split")
    p.add_argument("--split", default=None, help="hub dataset split")
    p.add_argument("--k", type=int, default=None, help=f"samples per problem (default {d.k})")
    p.add_argument("--out", dest="out_dir", metavar="DIR", default=None,
                   help=f"output directory for eval.json and eval.md (default: {d.out_dir})")
    p.add_argument("--max-new-tokens", type=int, default=None, help=f"default {d.max_new_tokens}")
    p.add_argument("--temperature", type=float, default=None, help=f"default {d.temperature}")
    p.add_argument("--top-p", type=float, default=None, help=f"default {d.top_p}")
    p.add_argument("--top-k", type=int, default=None, help=f"default {d.top_k}; 0 disables it")
    p.add_argument("--seed", type=int, default=None, help=f"default {d.seed}")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N problems only")
    p.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="enable_thinking for the student prompt (default off)")
    p.add_argument("--dtype", default=None, help=f"float32, bfloat16 or float16 (default {d.dtype})")
    p.add_argument("--batch-size", type=int, default=None, help=f"samples per generation call (default {d.batch_size})")
    p.add_argument("--columns", default=None, metavar="FIELD=COLUMN,...",
                   help="map fields to the data's columns, e.g. problem=question,answer=final")
    p.add_argument("--on-bad-row", choices=["error", "skip"], default=None,
                   help=f"a bad row stops the run (error) or is dropped with a warning (skip); default {d.on_bad_row}")
    p.add_argument("--max-bad-row-share", type=float, default=None,
                   help=f"with --on-bad-row skip: stop when more than this share of the rows is bad "
                        f"(default {d.max_bad_row_share})")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="drop problems whose student prompt is longer, with a warning (default: no limit)")
    p.add_argument("--backend", choices=["hf", "vllm"], default=None,
                   help=f"sampler: transformers in this process, or vLLM engines (default {d.backend})")
    p.add_argument("--data-parallel", type=int, default=None,
                   help="vllm: engines, each on its own GPUs (default: every visible GPU group; 1 without GPUs)")
    p.add_argument("--tensor-parallel", type=int, default=None, help=f"vllm: GPUs per engine (default {d.tensor_parallel})")
    p.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help=f"vllm: fraction of each GPU an engine may take (default {d.gpu_memory_utilization})")
    p.add_argument("--max-model-len", type=int, default=None, help="vllm: prompt + completion limit")


def _run_eval(args) -> None:
    from dataclasses import replace

    from atesd.eval_config import check_complete, load_eval_config, parse_columns, prepare_eval_dir
    from atesd.eval_config import run_eval
    from atesd.toy.paths import resolve_model_and_data

    names = ("model", "data", "split", "k", "out_dir", "max_new_tokens", "temperature", "top_p", "top_k",
             "seed", "limit", "thinking", "dtype", "batch_size", "on_bad_row", "max_bad_row_share", "max_prompt_tokens", "backend",
             "data_parallel", "tensor_parallel", "gpu_memory_utilization", "max_model_len")
    flags = {name: getattr(args, name) for name in names if getattr(args, name) is not None}  # given flags only
    if args.columns is not None:
        flags["columns"] = parse_columns(args.columns)
    if args.protocol is not None:  # the toy protocol by name: the experiments' settings, mapped here
        from atesd.experiments.protocol import PROTOCOLS, protocol_eval_settings

        flags = protocol_eval_settings(args.protocol, flags)
        print(PROTOCOLS[args.protocol].describe() + (f" (its first {flags['limit']} problems)"
                                                      if flags["limit"] != PROTOCOLS[args.protocol].n_problems else ""))
    cfg = load_eval_config(args.config, flags)
    check_complete(cfg)
    model, data = resolve_model_and_data(cfg.model, cfg.data)
    cfg = replace(cfg, model=model, data=data)
    if args.config is not None:  # a config's data may be an evaluation-only set (answers, no solutions)
        cfg = replace(cfg, data=str(prepare_eval_dir(cfg)), split=None, columns={}, limit=None)
    report = run_eval(cfg)
    print(report.to_markdown())
    print(f"wrote {os.path.join(cfg.out_dir, 'eval.json')}")


def _add_toy(sub) -> None:
    p = sub.add_parser("toy", help="the embedded toy world")
    toy_sub = p.add_subparsers(dest="toy_command", required=True)
    b = toy_sub.add_parser(
        "build", help="generate the task, train the tokenizer, warm-start a tiny Qwen3",
        description="Measures this machine, prints the plan (every phase and the whole command's minutes), "
                    "builds the world, prints its student / teacher / supervised-control tables and a verdict: "
                    "whether the world is usable for self-distillation, why, and what to change if not.",
        epilog="exit status: 0 the world is usable (or --no-report: no verdict); 2 bad input; "
               "3 the world was built but the verdict says it is NOT usable")
    b.add_argument("--preset", default="toy-1m", help="model preset: toy-1m, toy-5m or toy-test (default toy-1m)")
    b.add_argument("--out", default=None,
                   help="copy the built world here, with its report.json (default: the cache only)")
    b.add_argument("--data", default=None, help="warm-start on this problem file instead of the toy task")
    b.add_argument("--max-level", type=int, default=None,
                   help="with --data: keep only the problems of difficulty <= this (easier levels only)")
    b.add_argument("--seed", type=int, default=0, help="seed of the task, tokenizer and warm start (default 0)")
    b.add_argument("--threads", type=int, default=2,
                   help="torch threads of the warm start (default 2; the build is deterministic per value; "
                        "1 on a CPU other work shares)")
    b.add_argument("--no-report", action="store_true", help="skip the evaluation tables and the verdict")
    b.add_argument("--minutes", type=float, default=15.0,
                   help="with --data: the whole command's time budget on this machine, measured at the start "
                        "(sets the warm start's steps and vocabulary; the report's time comes out of it; default 15)")
    b.add_argument("--rebuild", action="store_true",
                   help="build even when the world is cached or ships with the package (into the cache)")


def _run_toy(args) -> int:
    from atesd.experiments.world_build import WORLD_NOT_USABLE, run_toy_build

    _, verdict = run_toy_build(preset=args.preset, out=args.out, data=args.data, seed=args.seed,
                               report=not args.no_report, rebuild=args.rebuild, minutes=args.minutes,
                               max_level=args.max_level, threads=args.threads)
    return WORLD_NOT_USABLE if verdict is not None and not verdict.usable else 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train with a YAML config and key=value overrides",
                       description="Every config field and its value: `atesd train --config FILE --print-config` "
                                   "(each field documented in src/atesd/config.py and docs/algorithm.md).")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file + overrides, every field) as YAML and exit without training")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="output_dir holds a run: move it aside to <output_dir>.old-<time> and start anew")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. exposure.hold_steps=4")


def _run_train(args) -> None:
    from atesd.config import config_yaml, load_config
    from atesd.toy.paths import resolve_toy_paths
    from atesd.train import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return
    cfg = resolve_toy_paths(cfg)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(result.summary())


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="toy world → base eval → training → eval, on 2 CPU cores")
    p.add_argument("--config", default=None, help="training config (default: configs/toy-atesd.yaml)")
    p.add_argument("--world", default=None,
                   help="the toy world (default: toy:toy-1m-top-down, whose references are written goal-first, off "
                        "the student's own order, docs/toy-world.md section 13, unless --config is given; then the "
                        "config's own); toy:toy-1m is the configs' world")
    p.add_argument("--out", default="runs/demo",
                   help="run folder (default runs/demo; a previous demo run there is moved aside to <out>.old-<time>)")
    p.add_argument("--n-problems", type=int, default=None,
                   help="first N test problems (default: the toy protocol's 500; fewer is no longer the protocol)")
    p.add_argument("--k", type=int, default=None, help="samples per problem (default: the toy protocol's 8)")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. steps=50 (default: none)")


def _run_demo(args) -> None:
    from atesd.experiments.demo import run_demo

    run_demo(config=args.config, out=args.out, overrides=args.overrides, n_problems=args.n_problems, k=args.k,
             world=args.world)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="PNG plots and a summary of a training run directory")
    p.add_argument("run_dir", help="the output_dir of an `atesd train` run")


def _run_report(args) -> None:
    from atesd.experiments.report import make_report, summarize_run

    print(summarize_run(args.run_dir))
    for path in make_report(args.run_dir):
        print(f"wrote {path}")


def _add_mismatch(sub) -> None:
    p = sub.add_parser("mismatch", help="teacher-student mismatch against the reveal ratio, on fixed rollouts")
    p.add_argument("--model", required=True, help="model directory, hub id or toy world (toy:toy-1m)")
    p.add_argument("--data", required=True, help="problem file, hub dataset or toy split (toy:val)")
    p.add_argument("--split", default=None, help="hub dataset split (default: none)")
    p.add_argument("--out", default="mismatch", help="output folder (default mismatch)")
    p.add_argument("--ratios", default="0,0.25,0.5,0.75,1",
                   help="comma-separated reveal ratios (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--n", type=int, default=None, help="the first N problems (default: all)")
    p.add_argument("--samples", type=int, default=1, help="student rollouts per problem (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="rollout length limit (default 512)")
    p.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="rollout top-p (default 1.0: off)")
    p.add_argument("--top-k", type=int, default=0, help="rollout top-k (default 0: off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="rollouts per generation call (default 16)")
    p.add_argument("--chunk-size", type=int, default=1024, help="tokens per divergence chunk (default 1024)")
    p.add_argument("--thinking", action="store_true", help="enable_thinking for the student prompt (default off)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default float32)")
    p.add_argument("--positions", action="store_true",
                   help="toy data only: also split the KL by position (before / at / after the first wrong "
                        "step, answer line) into positions.json")


def _run_mismatch(args) -> None:
    from atesd.experiments.mismatch import run_mismatch
    from atesd.experiments.positions import run_mismatch_positions
    from atesd.toy.paths import resolve_model_and_data

    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        raise ValueError(f"--ratios {args.ratios!r}: expected comma-separated numbers in [0, 1]") from None
    run = run_mismatch_positions if args.positions else run_mismatch
    model, data = resolve_model_and_data(args.model, args.data)
    result = run(
        model, data, ratios=ratios, out_dir=args.out, split=args.split, thinking=args.thinking,
        dtype=args.dtype, n_problems=args.n, samples_per_problem=args.samples,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, seed=args.seed, batch_size=args.batch_size, chunk_size=args.chunk_size,
    )
    for report in result if args.positions else [result]:
        print(report.to_markdown())
    for name in ("mismatch.json", "positions.json") if args.positions else ("mismatch.json",):
        print(f"wrote {os.path.join(args.out, name)}")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="every method on the toy world, same rollout budget, several seeds")
    p.add_argument("--suite", default="toy", choices=["toy"], help="the benchmark suite (default toy)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 with --quick)")
    p.add_argument("--seed-offset", type=int, default=0,
                   help="the first seed (default 0): --seeds 3 --seed-offset 6 runs seeds 6, 7, 8")
    p.add_argument("--quick", action="store_true", help="tiny budgets for a CI smoke (~2 min on 2 cores)")
    p.add_argument("--out", default=None, help="default runs/bench-toy (runs/bench-toy-quick with --quick)")
    p.add_argument("--world", default=None,
                   help="the toy world to bench on: a name (toy:toy-1m-top-down) or a world folder "
                        "(default: the configs' own, toy:toy-1m)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="a subset of atesd.experiments.bench.METHODS (default: all of them)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run (default 500, the toy configs' own; validation every steps/4)")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides applied to every method, e.g. --set optim.lr=1e-4 loss.divergence=forward_kl "
                        "(default: none)")


def _run_bench(args) -> None:
    from atesd.config import ConfigError
    from atesd.experiments.bench import run_bench
    from atesd.toy.paths import toy_world_of

    model_dir = None
    if args.world is not None:
        model_dir = toy_world_of(args.world)
        if model_dir is None:
            raise ConfigError(f"--world {args.world!r}: neither a toy world name (toy:toy-1m-top-down) "
                              "nor a folder holding a toy world (world.json)")
    outcome = run_bench(suite=args.suite, seeds=args.seeds, quick=args.quick, out=args.out, model_dir=model_dir,
                        methods=args.methods, overrides=args.overrides, steps=args.steps,
                        seed_offset=args.seed_offset, command="atesd " + " ".join(sys.argv[1:]))
    for path in outcome.files:
        print(f"wrote {path}")


def _add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help="does the exposure controller's reward rank reveal ratios like accuracy?")
    what = p.add_subparsers(dest="what", required=True)
    r = what.add_parser("rewards", help="correlation of α with each reward part in a run's exposure.jsonl")
    r.add_argument("run_dir", help="the output_dir of a training run (its exposure.jsonl)")
    c = what.add_parser("credit", help="first-order probe credit of every ratio on one model, same rollouts")
    c.add_argument("--model", required=True, help="model directory, hub id or toy world (toy:toy-1m)")
    c.add_argument("--data", required=True, help="training problems (probe and sample drawn from them), e.g. toy:train")
    c.add_argument("--ratios", default="0,0.25,0.5,0.75,1",
                   help="comma-separated reveal ratios (default 0,0.25,0.5,0.75,1)")
    c.add_argument("--n", type=int, default=256, help="problems sampled, one rollout each (default 256)")
    c.add_argument("--probe-size", type=int, default=16, help="held-out probe problems (default 16)")
    c.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    c.add_argument("--divergence", default="reverse_kl", help="the loss's divergence (default reverse_kl)")
    c.add_argument("--probe", default="reference", choices=["reference", "accuracy"],
                   help="the probe objective whose descent direction scores the ratios (default reference)")
    c.add_argument("--samples", type=int, default=4, help="--probe accuracy: samples per probe problem (default 4)")
    c.add_argument("--bench", default=None,
                   help="a bench folder: compare with its fixed-ratio test accuracy (default: none)")
    c.add_argument("--out", default=None, help="write the table as JSON here (default: print only)")


def _run_diagnose(args) -> None:
    import json

    from atesd.experiments.exposure_diagnostic import reward_correlations, run_credit_diagnostic
    from atesd.toy.paths import resolve_model_and_data

    if args.what == "rewards":
        result = reward_correlations(args.run_dir)
        print(f"{result['decisions']} credited decisions; correlation of {result['x']} with:")
        for part, value in result["parts"].items():
            lo, hi = value["ci95"]
            print(f"  {part}: r = {value['r']:+.3f} (95% CI {lo:+.3f} … {hi:+.3f}, n = {value['n']})")
        for level, value in result.get("reward_by_difficulty", {}).items():
            lo, hi = value["ci95"]
            print(f"  reward, difficulty {level}: r = {value['r']:+.3f} (95% CI {lo:+.3f} … {hi:+.3f}, n = {value['n']})")
        print(json.dumps(result))
        return
    ratios = [float(r) for r in args.ratios.split(",")]
    model, data = resolve_model_and_data(args.model, args.data)
    run_credit_diagnostic(model, data, ratios, args.n, args.probe_size, args.seed, args.bench, args.out,
                          args.divergence, args.probe, args.samples)


COMMANDS = {"eval": (_add_eval, _run_eval), "toy": (_add_toy, _run_toy),
            "train": (_add_train, _run_train), "demo": (_add_demo, _run_demo),
            "report": (_add_report, _run_report), "mismatch": (_add_mismatch, _run_mismatch),
            "bench": (_add_bench, _run_bench), "diagnose": (_add_diagnose, _run_diagnose)}


def build_parser() -> argparse.ArgumentParser:
    from atesd import __version__

    parser = argparse.ArgumentParser(prog="atesd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"atesd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from atesd.config import ConfigError
    from atesd.data import DataError

    try:
        status = COMMANDS[args.command][1](args)  # None, or a command's own exit status
    except (DataError, ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"atesd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ImportError, ZeroDivisionError) as err:  # a bad --model path, a missing backend
        print(f"atesd {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return status or 0


def one_line(err: BaseException) -> str:
    """The error's message on one line (its lines joined); the type's name when the message alone
    would not say what happened (ZeroDivisionError's "division by zero")."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, ZeroDivisionError) or not message:
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message


if __name__ == "__main__":
    sys.exit(main())
