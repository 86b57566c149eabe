"""The verdict of the label-free controller's confirmatory test (docs/toy-world.md, section 14.2), computed
from each world's contrasts.json (`benchmarks/contrasts.py`) exactly as the plan states its criteria:

(A) on at least one world, learned − OPSD exceeds 2 SE with the seed as the unit;
(B) on the other world, learned − OPSD is not below zero;
(C) on a world where (A) holds, learned − OPSD is at least 60 % of the best oracle's gain over OPSD on the
    same seeds (void there if that gain is ≤ 0).

The test passes when one world satisfies (A) and (C) (or (C) is void there) and the other satisfies (B). A world
whose contrasts do not cover exactly the planned seeds, or a planned world not given, is "incomplete", and so is
the verdict:

    python benchmarks/label_free_verdict.py toy1m=docs/figures/bench-label-free/toy1m/contrasts.json \
        t2=docs/figures/bench-label-free/t2/contrasts.json --out docs/figures/bench-label-free/verdict.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atesd import atomic

PLANNED_SEEDS = ("9", "10", "11", "12", "13", "14")
PLANNED_WORLDS = ("toy1m", "t2")  # toy:toy-1m and toy:toy-1m-top-down, the bench folders' tags
SHARE_OF_ORACLE = 0.6


def find(contrasts: dict, method: str, reference: str, source: str) -> dict:
    """The row "method - reference" of one contrasts.json, or a clear error naming the file."""
    for row in contrasts["contrasts"]:
        if row["contrast"] == f"{method} - {reference}":
            if "missing" in row:
                raise ValueError(f"{source}: contrast {row['contrast']!r} is missing {row['missing']}")
            return row
    raise ValueError(f"{source}: no contrast {method} - {reference} (run benchmarks/contrasts.py with {method}:{reference})")


def world_criteria(learned: dict, oracle: dict, seeds: tuple[str, ...] = PLANNED_SEEDS) -> dict:
    """Criteria (A), (B) and (C) on one world, from its learned − OPSD and oracle − OPSD rows."""
    if not set(learned["by_seed"]) == set(oracle["by_seed"]) == set(seeds):
        covered = sorted(set(learned["by_seed"]) & set(oracle["by_seed"]), key=int)
        return {"status": "incomplete", "seeds_in": covered, "seeds_planned": list(seeds)}
    mean, se, gain = learned["seed_mean"], learned["seed_se"], oracle["seed_mean"]
    c_void = gain <= 0
    return {"status": "complete", "learned_minus_opsd": mean, "seed_se": se, "pooled_se": learned["pooled_se"],
            "oracle_minus_opsd": gain, "share_of_oracle": None if c_void else mean / gain,
            "A": mean > 2 * se, "B": mean >= 0, "C": None if c_void else mean >= SHARE_OF_ORACLE * gain,
            "by_seed": learned["by_seed"]}


def verdict(worlds: dict[str, dict]) -> dict:
    """The test's outcome over the worlds' criteria: "pass", "fail" or "incomplete", with the world that carries it."""
    if any(w["status"] != "complete" for w in worlds.values()):
        return {"outcome": "incomplete", "worlds": worlds}
    for name, w in worlds.items():
        others_hold_b = all(o["B"] for other, o in worlds.items() if other != name)
        if w["A"] and w["C"] is not False and others_hold_b:
            return {"outcome": "pass", "carried_by": name, "worlds": worlds}
    return {"outcome": "fail", "worlds": worlds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worlds", nargs="+", help="NAME=contrasts.json, one per world")
    parser.add_argument("--learned", default="atesd-per-feature-divergence")
    parser.add_argument("--oracle", default="by-divergence")
    parser.add_argument("--reference", default="opsd")
    parser.add_argument("--seeds", default=",".join(PLANNED_SEEDS), help="the planned seeds, comma-separated")
    parser.add_argument("--planned-worlds", default=",".join(PLANNED_WORLDS),
                        help="the worlds the plan names, comma-separated; one not given leaves the verdict incomplete")
    parser.add_argument("--out", help="write the verdict as JSON here")
    args = parser.parse_args(argv)
    seeds = tuple(s.strip() for s in args.seeds.split(","))
    worlds = {}
    for item in args.worlds:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            parser.error(f"{item!r}: give NAME=PATH with an existing contrasts.json")
        contrasts = json.loads(Path(path).read_text())
        learned = find(contrasts, args.learned, args.reference, path)
        oracle = find(contrasts, args.oracle, args.reference, path)
        worlds[name] = {"contrasts": path, **world_criteria(learned, oracle, seeds)}
    for name in args.planned_worlds.split(","):
        worlds.setdefault(name, {"contrasts": None, "status": "incomplete", "seeds_in": [], "seeds_planned": list(seeds)})
    result = {"learned": args.learned, "oracle": args.oracle, "reference": args.reference, "seeds": list(seeds),
              "share_of_oracle_required": SHARE_OF_ORACLE, **verdict(worlds)}
    for name, w in worlds.items():
        if w["status"] == "complete":
            share = "void" if w["C"] is None else f"{w['share_of_oracle']:.0%} of {w['oracle_minus_opsd']:+.2f}"
            print(f"{name}: learned - {args.reference} {w['learned_minus_opsd']:+.2f} ± {w['seed_se']:.2f} "
                  f"(seed unit; pooled ± {w['pooled_se']:.2f}); A={w['A']} B={w['B']} C={w['C']} ({share})")
        else:
            print(f"{name}: incomplete, seeds {w['seeds_in']} of {w['seeds_planned']}")
    print(f"outcome: {result['outcome']}" + (f" (carried by {result['carried_by']})" if "carried_by" in result else ""))
    if args.out:
        atomic.write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
