"""A wordier task than the toy world's, to time `atesd toy build --data` on a user's own file.

Polynomial evaluation by Horner's method: "Evaluate p(x) = 3x^3 - 2x^2 + 5x - 7 at x = 4 using
Horner's method." Each solution has one step per coefficient after the first (3–5 steps), each
step a sentence of ~80 characters ("Multiply the running value 10 by x = 4 and add the next
coefficient 5: 10 × 4 + 5 = 45."), then "The answer is \\boxed{...}.". Seeded; difficulty = degree − 2,
levels 1 to --levels (default 3: degrees 3–5; 5: degrees 3–7, intermediate values up to 7 digits,
a task of the shape issue 27 describes: multi-step arithmetic, one step per line, levels 1–5).

    python benchmarks/horner_data.py --n 2000 --out /tmp/horner.jsonl
    python benchmarks/horner_data.py --n 2000 --levels 5 --out /tmp/horner5.jsonl
    atesd toy build --data /tmp/horner5.jsonl --minutes 15 --out /tmp/horner5-world   # plan, build, report, verdict
"""

from __future__ import annotations

import argparse
import random

from atesd.data import Problem, write_problems


def _term(coefficient: int, power: int, first: bool) -> str:
    sign = "" if first and coefficient >= 0 else ("- " if coefficient < 0 else "+ ")
    magnitude = abs(coefficient)
    body = {0: f"{magnitude}", 1: f"{magnitude}x"}.get(power, f"{magnitude}x^{power}")
    return f"{sign}{body}"


def horner_problem(index: int, rng: random.Random, levels: int = 3) -> Problem:
    degree = rng.randint(3, 2 + levels)
    coefficients = [rng.randint(1, 9)] + [rng.choice([-1, 1]) * rng.randint(1, 9) for _ in range(degree)]
    x = rng.randint(2, 5)
    polynomial = " ".join(_term(c, degree - i, i == 0) for i, c in enumerate(coefficients))
    value = coefficients[0]
    steps = [f"Start Horner's scheme with the leading coefficient {value} as the running value."]
    for coefficient in coefficients[1:]:
        new = value * x + coefficient
        steps.append(f"Multiply the running value {value} by x = {x} and add the next coefficient "
                     f"{coefficient}: {value} × {x} + ({coefficient}) = {new}.")
        value = new
    solution = "\n\n".join(steps + [f"The answer is \\boxed{{{value}}}."])
    return Problem(id=f"horner-{index:05d}", problem=f"Evaluate p(x) = {polynomial} at x = {x} using Horner's method.",
                   solution=solution, answer=str(value), difficulty=degree - 2, source="horner")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, default=3, help="difficulty levels: degrees 3 to 2 + levels")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    write_problems(args.out, [horner_problem(i, rng, args.levels) for i in range(args.n)])
    print(f"wrote {args.n} Horner problems to {args.out}")


if __name__ == "__main__":
    main()
