"""Evaluate the saved models of a bench under another named test protocol, into a new bench folder:

    python benchmarks/bench_reevaluate.py runs/bench-toy --protocol toy-avg64 --out runs/bench-toy-avg64 \
        --methods base opsd atesd-per-difficulty

For every `<seed>/<method>/result.json` of the bench folder it evaluates the last step's model
(`final/`) and the checkpoint chosen on validation (`best/`, when it is not the last step; the base
row: the bench's warm-started model) under the protocol (`atesd.experiments.protocol.PROTOCOLS`),
and writes the result, with its `test` and `test_last_step` replaced and the figures it replaces
kept under `replaced_tests`, to `<out>/<seed>/<method>/result.json`. Finished runs are skipped, so a
killed re-evaluation resumes. It then writes bench.json, BENCHMARKS-toy.md and the plots of
`atesd.experiments.bench_report` into --out, with the new protocol as the budget's test: the report
and `bench_merge.py` pair and pool re-evaluated benches like any other. Training records (validation
curve, reveal ratios, tokens) are the bench's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atesd import atomic
from atesd.experiments.bench import METHODS, RESULT_FILE
from atesd.experiments.bench_report import write_report
from atesd.experiments.protocol import PROTOCOLS, EvalProtocol, evaluate_under
from atesd.prompts import PromptConfig


def _model_dirs(run_dir: Path, result: dict, steps: int, base_model: Path) -> dict[str, Path]:
    """The models behind the run's test ("test": chosen checkpoint) and last-step test."""
    if result["method"] == "base":
        return {"test": base_model}
    last = run_dir / "final"
    chosen = last if result["chosen_step"] == steps else run_dir / "best"
    return {"test": chosen, "test_last_step": last}


def reevaluate_run(path: Path, out_path: Path, protocol: EvalProtocol, steps: int, base_model: Path,
                   problems, prompts: PromptConfig, by_model: dict[Path, dict]) -> dict:
    """One run's result.json under `protocol`, written atomically to `out_path`. `by_model` holds the
    reports of models already evaluated (the chosen checkpoint is often the last step, and every
    seed's base row is the same model): each is evaluated once."""
    result = json.loads(path.read_text())
    reports: dict[str, dict] = {}
    for key, model_dir in _model_dirs(path.parent, result, steps, base_model).items():
        if model_dir not in by_model:
            if not (model_dir / "model.safetensors").is_file():
                raise SystemExit(f"{path}: its {key} model {model_dir} is missing (no model.safetensors)")
            by_model[model_dir] = evaluate_under(protocol, model_dir, problems, prompts).to_dict()
        reports[key] = by_model[model_dir]
    replaced = {key: {"protocol": (result[key].get("meta") or {}).get("protocol"),
                      "average_at_k": result[key]["average_at_k"]}
                for key in ("test", "test_last_step") if result.get(key)}
    new = {**result, **reports, "replaced_tests": replaced, "reevaluated_from": str(path)}
    atomic.write_json(out_path, new)
    return new


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_dir", type=Path, help="a bench folder: bench.json and <seed>/<method>/result.json")
    parser.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", help="only these methods (default: every method of the bench)")
    parser.add_argument("--model-dir", type=Path, help="the base model (default: the bench's model_dir)")
    parser.add_argument("--data-dir", type=Path, help="the world's data folder (default: the bench's data_dir)")
    args = parser.parse_args(argv)
    bench_file = args.bench_dir / "bench.json"
    if not bench_file.is_file():
        raise SystemExit(f"{bench_file}: no such file; re-evaluation starts from a bench folder")
    # the levels of the old protocol's test problems (test_difficulty) are recomputed for the new one's
    meta = {k: v for k, v in json.loads(bench_file.read_text()).items() if k not in ("results", "test_difficulty")}
    protocol = PROTOCOLS[args.protocol]
    base_model = args.model_dir or Path(meta["model_dir"])
    data_dir = args.data_dir or Path(meta["data_dir"])
    problems = protocol.problems(data_dir)
    steps = meta["budget"]["steps"]
    results, by_model = [], {}
    for path in sorted(args.bench_dir.glob(f"*/*/{RESULT_FILE}")):
        seed, method = path.parent.parent.name, path.parent.name
        if args.methods and method not in args.methods:
            continue
        out_path = args.out / seed / method / RESULT_FILE
        done = json.loads(out_path.read_text()) if out_path.is_file() else None
        if done is None or done["test"].get("meta", {}).get("protocol") != protocol.to_dict():
            done = reevaluate_run(path, out_path, protocol, steps, base_model, problems, PromptConfig(), by_model)
            last = done.get("test_last_step") or done["test"]
            print(f"{path.parent}: {protocol.name} last step {last['average_at_k']:.4f}", flush=True)
        results.append(done)
    if not results:
        raise SystemExit(f"{args.bench_dir}: no <seed>/<method>/{RESULT_FILE} to re-evaluate")
    order = {m.name: i for i, m in enumerate(METHODS)}
    results.sort(key=lambda r: (order.get(r["method"], len(order)), r["seed"]))
    meta.update(budget={**meta["budget"], "test": protocol.to_dict()}, model_dir=str(base_model),
                data_dir=str(data_dir), methods=list(dict.fromkeys(r["method"] for r in results)),
                seeds=sorted({r["seed"] for r in results}), reevaluated_from=str(bench_file),
                command="python benchmarks/bench_reevaluate.py " + " ".join(sys.argv[1:] if argv is None else argv))
    for path in write_report(args.out, results, meta):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
