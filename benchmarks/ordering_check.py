"""Does a bench rank the methods as the papers do? The five contrasts of the Qwen3 tables (OPSD, arXiv
2601.18734; ATESD, arXiv 2605.11458), each with the pooled-pairs SE and with the seed as the unit
(`atesd.experiments.bench_stats`), on the last-step models (`--key test_last_step`, the default) or
the checkpoints chosen on validation (`--key test`):

    python benchmarks/ordering_check.py docs/figures/bench-top-down/bench.json --grpo grpo-16x8-lr1e-5 \
        --out docs/figures/bench-top-down/ordering.json
    python benchmarks/ordering_check.py docs/figures/bench-toy/bench.json \
        docs/figures/bench-toy-grpo-paper/bench.json --grpo grpo-16x8-lr1e-5      # pooled, as bench_merge pools

| contrast | what the papers show | met when |
|---|---|---|
| OPSD − base | OPSD above the base | mean > 2 SE |
| OPSD − SFT | SFT below OPSD (below the base, even) | mean > 2 SE |
| GRPO − base | GRPO above the base | mean > 0 |
| OPSD − GRPO | GRPO below OPSD at equal rollouts | mean > 0 |
| random − OPSD | uniformly random exposure below OPSD | mean < 0 |

"met" is judged twice, once per SE (the pooled pairs count the test sampling only; the seed as the
unit counts the training seeds too). A contrast whose methods the bench lacks is reported missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atesd import atomic
from atesd.experiments.bench_stats import by_method, over_seeds, paired_vs_reference, per_seed_differences

# (method, reference, criterion): method − reference, the criterion on its mean and SE
CONTRASTS = (("opsd", "base", "above 2 SE"), ("opsd", "sft", "above 2 SE"), ("{grpo}", "base", "above 0"),
             ("opsd", "{grpo}", "above 0"), ("random", "opsd", "below 0"))


def _met(criterion: str, mean: float, se: float | None) -> bool | None:
    if criterion == "above 2 SE":
        return None if se is None else mean > 2 * se
    return mean > 0 if criterion == "above 0" else mean < 0


def ordering(bench: dict, grpo: str = "grpo", key: str = "test_last_step") -> list[dict]:
    """One record per contrast: the pooled-pairs and the seed-as-unit mean ± SE and whether each meets it."""
    names = {r["method"] for r in bench["results"]}
    groups = by_method(bench["results"], sorted(names))
    rows = []
    for method, reference, criterion in CONTRASTS:
        method, reference = method.format(grpo=grpo), reference.format(grpo=grpo)
        row = {"contrast": f"{method} - {reference}", "criterion": criterion, "key": key}
        pooled = paired_vs_reference(groups, method, reference, key) if {method, reference} <= names else None
        if pooled is None:
            rows.append({**row, "missing": sorted({method, reference} - names) or "no common seeds"})
            continue
        seed_mean, seed_se, n_seeds = over_seeds(per_seed_differences(groups, method, reference, key))
        rows.append({**row, "pooled_mean": pooled[0], "pooled_se": pooled[1], "pairs": pooled[2],
                     "seed_mean": seed_mean, "seed_se": seed_se, "seeds": n_seeds,
                     "met_pooled": _met(criterion, *pooled[:2]), "met_seed_unit": _met(criterion, seed_mean, seed_se)})
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(mean, se, seeds=None):
        if se is None:
            return f"{100 * mean:+.1f} (1 seed)"
        return f"{100 * mean:+.1f} ± {100 * se:.1f}" + (f" ({seeds} seeds)" if seeds else "")

    def yes(flag):
        return {True: "yes", False: "**no**", None: "–"}[flag]

    lines = ["| contrast | pooled pairs | seed as the unit | criterion | met (pooled / seed) |", "|---|---|---|---|---|"]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['contrast']} | missing: {r['missing']} | | {r['criterion']} | |")
        else:
            lines.append(f"| {r['contrast']} | {cell(r['pooled_mean'], r['pooled_se'])} | "
                         f"{cell(r['seed_mean'], r['seed_se'], r['seeds'])} | {r['criterion']} | "
                         f"{yes(r['met_pooled'])} / {yes(r['met_seed_unit'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_json", type=Path, nargs="+",
                        help="one bench.json, or several pooled as benchmarks/bench_merge.py pools them")
    parser.add_argument("--grpo", default="grpo", help="the bench's GRPO row (default grpo; grpo-16x8 for its budget)")
    parser.add_argument("--key", default="test_last_step", choices=["test_last_step", "test"],
                        help="last-step models (default) or the checkpoints chosen on validation")
    parser.add_argument("--out", type=Path, default=None, help="write the records as JSON here (default: print only)")
    args = parser.parse_args(argv)
    for path in args.bench_json:
        if not path.is_file():
            raise SystemExit(f"{path}: no such bench.json")
    if len(args.bench_json) == 1:
        bench = json.loads(args.bench_json[0].read_text())
    else:
        from bench_merge import merge  # benchmarks/, beside this script

        results, _ = merge(args.bench_json)
        bench = {"results": results}
    rows = ordering(bench, args.grpo, args.key)
    print(markdown(rows))
    if args.out is not None:
        command = "python benchmarks/ordering_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
        atomic.write_json(args.out, {"command": command, "bench": [str(p) for p in args.bench_json], "contrasts": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
