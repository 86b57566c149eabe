"""How finely does a protocol compare two trained models? More samples per problem or more problems?

    python benchmarks/protocol_power.py runs/bench-toy/0/atesd-per-difficulty/final \
        runs/bench-toy/0/opsd/final --data-dir src/atesd/toy/worlds/toy-1m/data \
        --out docs/figures/bench-toy/protocol_power.json

Evaluates both models under toy-avg8 and under the same protocol with `--many` samples per problem
(default 64), and splits the variance of the per-problem paired difference d = a − b into a part
that more samples remove and a part they cannot (a real per-problem difference between the two
models): Var(d_k) = t + s / k, solved from k = 8 and k = many. It then predicts the paired SE of
the difference over n problems (× seeds) at each k: √((t + s/k) / n). Section 9.2 of
docs/toy-world.md chose the protocol of its confirmatory test from this.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from atesd import atomic
from atesd.experiments.protocol import TOY_PROTOCOL, evaluate_under
from atesd.prompts import PromptConfig


def variance_parts(d_few: list[float], d_many: list[float], few: int, many: int) -> tuple[float, float]:
    """(t, s) of Var(d_k) = t + s / k from the variances at k = few and k = many (t floored at 0)."""
    v_few, v_many = statistics.pvariance(d_few), statistics.pvariance(d_many)
    s = (v_few - v_many) / (1 / few - 1 / many)
    return max(v_few - s / few, 0.0), s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a", type=Path)
    parser.add_argument("model_b", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True, help="the world's data folder")
    parser.add_argument("--many", type=int, default=64, help="samples per problem of the second evaluation")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    protocols = {k: replace(TOY_PROTOCOL, name=f"toy-avg{k}", k=k) for k in (TOY_PROTOCOL.k, args.many)}
    problems = TOY_PROTOCOL.problems(args.data_dir)
    diffs, means = {}, {}
    for k, protocol in protocols.items():
        a, b = (evaluate_under(protocol, m, problems, PromptConfig()).per_problem_accuracy
                for m in (args.model_a, args.model_b))
        diffs[k] = [a[p] - b[p] for p in a]
        means[k] = {"a": statistics.fmean(a.values()), "b": statistics.fmean(b.values())}
    n = len(problems)
    t, s = variance_parts(diffs[TOY_PROTOCOL.k], diffs[args.many], TOY_PROTOCOL.k, args.many)
    record = {
        "command": "python benchmarks/protocol_power.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model_a": str(args.model_a), "model_b": str(args.model_b), "problems": n,
        "by_k": {str(k): {"average_a": means[k]["a"], "average_b": means[k]["b"],
                          "mean_difference": statistics.fmean(diffs[k]), "variance": statistics.pvariance(diffs[k]),
                          "se": (statistics.pvariance(diffs[k]) / n) ** 0.5} for k in protocols},
        "per_problem_part_t": t, "sampling_part_s": s,
        "predicted_se_points": {f"{pairs} pairs, k={k}": 100 * ((t + s / k) / pairs) ** 0.5
                                for pairs in (1500, 6000) for k in (8, 16, 32, 64)},
    }
    atomic.write_json(args.out, record)
    for k, row in record["by_k"].items():
        print(f"k={k}: difference {100 * row['mean_difference']:+.2f} points, variance {row['variance']:.4f}, "
              f"SE over {n} problems {100 * row['se']:.2f}")
    print(f"per-problem part t = {t:.4f}, sampling part s = {s:.4f}")
    for label, se in record["predicted_se_points"].items():
        print(f"predicted SE, {label}: {se:.2f} points")


if __name__ == "__main__":
    main()
