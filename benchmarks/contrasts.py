"""Paired contrasts "method − reference" from one or several pooled bench.json: the pooled-pairs mean ± SE,
the seed-as-unit mean ± SE with each seed's value, and the pooled mean ± SE per difficulty level
(`atesd.experiments.bench_stats`), on the last-step models (`--key test_last_step`, the default) or the
validation-chosen ones (`--key test`). Used for the feature oracles and the label-free controller's
confirmatory test (docs/toy-world.md, section 14):

    python benchmarks/contrasts.py docs/figures/bench-label-free-oracles/bench.json \
        by-correct:opsd by-pass-rate:opsd-g4 by-confidence:opsd by-divergence:opsd \
        --out docs/figures/bench-label-free-oracles/contrasts.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atesd import atomic
from atesd.experiments.bench_stats import (by_method, over_seeds, paired_by_difficulty, paired_vs_reference,
                                           per_seed_differences, problem_levels)


def contrast(bench: dict, method: str, reference: str, key: str = "test_last_step") -> dict:
    """method − reference: pooled pairs, seed as the unit (each seed's Δ too) and by level, in points."""
    names = {r["method"] for r in bench["results"]}
    row = {"contrast": f"{method} - {reference}", "key": key}
    if not {method, reference} <= names:
        return {**row, "missing": sorted({method, reference} - names)}
    groups = by_method(bench["results"], sorted(names))
    pooled = paired_vs_reference(groups, method, reference, key)
    if pooled is None:
        return {**row, "missing": "no common seeds"}
    seeds = per_seed_differences(groups, method, reference, key)
    seed_mean, seed_se, n_seeds = over_seeds(seeds)
    levels = paired_by_difficulty(groups, method, problem_levels(bench), reference, key)
    points = lambda x: None if x is None else 100 * x  # noqa: E731
    return {**row, "pooled_mean": points(pooled[0]), "pooled_se": points(pooled[1]), "pairs": pooled[2],
            "seed_mean": points(seed_mean), "seed_se": points(seed_se), "seeds": n_seeds,
            "by_seed": {str(s): points(d) for s, d in sorted(seeds.items())},
            "by_level": {str(lv): [points(m), points(se)] for lv, (m, se, _) in levels.items()}}


def markdown(rows: list[dict]) -> str:
    lines = ["| contrast | pooled pairs | seed as the unit [each seed] | by level (pooled) |", "|---|---|---|---|"]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['contrast']} | missing: {r['missing']} | | |")
            continue
        seed = (f"{r['seed_mean']:+.2f} ± {r['seed_se']:.2f}" if r["seed_se"] is not None else f"{r['seed_mean']:+.2f}")
        each = ", ".join(f"{v:+.2f}" for v in r["by_seed"].values())
        level = " / ".join(f"{m:+.1f}" for m, _ in r["by_level"].values())
        lines.append(f"| {r['contrast']} | {r['pooled_mean']:+.2f} ± {r['pooled_se']:.2f} | {seed} [{each}] | {level} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="bench.json files, then METHOD:REFERENCE pairs")
    parser.add_argument("--key", default="test_last_step", choices=("test_last_step", "test"))
    parser.add_argument("--out", help="write the contrasts as JSON here")
    args = parser.parse_args(argv)
    paths = [Path(x) for x in args.inputs if ":" not in x]
    pairs = [x.split(":", 1) for x in args.inputs if ":" in x]
    if not paths or not pairs:
        parser.error("give one or more bench.json and one or more METHOD:REFERENCE pairs")
    for path in paths:
        if not path.is_file():
            parser.error(f"{path}: no such bench.json")
    from bench_merge import merge  # benchmarks/, beside this script: pools as it pools (one budget, no run twice)

    results, meta = merge(paths)
    bench = {**meta, "results": results}
    rows = [contrast(bench, method, reference, args.key) for method, reference in pairs]
    print(markdown(rows))
    if args.out:
        atomic.write_text(args.out, json.dumps({"inputs": [str(p) for p in paths], "key": args.key, "contrasts": rows},
                                               indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
