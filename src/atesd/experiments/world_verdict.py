"""Whether a toy world is usable for self-distillation, said in one plain line from its measured tables.

On-policy self-distillation trains the student toward the next-token distributions of the same
model prompted with the problem and a revealed part of the reference (OPSD, arXiv 2601.18734;
ATESD, arXiv 2605.11458, section 3). That can teach only where the teacher is right and the
student is not, on problems the student neither always nor never solves, and adaptive exposure has
something to choose only where the revealed share changes the teacher. The verdict checks these on
the tables of `atesd.experiments.world_report` (a `ToyWorldReport` or its `to_dict()`, e.g. a
stored report.json):

1. teacher lead: the teacher's accuracy at α = 1 is at least TEACHER_LEAD (10 points) above the
   student's Average@k;
2. student range: on more than half of the difficulty levels the student's Average@k is at least
   STUDENT_FLOOR (1%) and at most STUDENT_CEILING (95%);
3. exposure: the teacher's accuracy at α = 1 is at least EXPOSURE_EFFECT (5 points) above α = 0;
4. supervision moves the student: the supervised control's paired change is over 2 standard
   errors (toy-world lesson: otherwise no method can be judged on the world). Skipped when the
   report has no control.

The thresholds are judgement calls, not derived: the shipped toy-1m world passes each by a wide
margin (lead 56.9 points, 5 of 5 levels in range, exposure +20.6 points, control +7.1 ± 1.1), and
the world of issue 27 fails the first two (lead 5.9 points; the student in range on 1 of 5 levels,
at 0 from level 2).
"""

from __future__ import annotations

from dataclasses import dataclass

TEACHER_LEAD = 0.10
STUDENT_FLOOR, STUDENT_CEILING = 0.01, 0.95
EXPOSURE_EFFECT = 0.05

USABLE, NOT_USABLE = "usable", "NOT usable"


@dataclass(frozen=True)
class Check:
    """One criterion: its name, whether it holds, and the measured numbers that say so."""

    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class WorldVerdict:
    """The checks of the module docstring, and the difficulty levels ("all" when the report has none)
    sorted by where the student is: in range, below STUDENT_FLOOR, above STUDENT_CEILING."""

    checks: tuple[Check, ...]
    levels: tuple[str, ...]
    levels_in_range: tuple[str, ...]
    levels_at_zero: tuple[str, ...]
    levels_at_ceiling: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return all(check.passed for check in self.checks)

    def line(self) -> str:
        """One plain line: usable or not, and why (the failed checks first)."""
        word = USABLE if self.usable else NOT_USABLE
        ordered = [c for c in self.checks if not c.passed] + [c for c in self.checks if c.passed]
        return f"Verdict: this world is {word} for self-distillation: " + "; ".join(c.reason for c in ordered) + "."


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _teacher_at(table: dict, ratio: float) -> float | None:
    return next((row["accuracy"] for row in table["teacher"] if abs(row["reveal_ratio"] - ratio) < 1e-9), None)


def world_verdict(report) -> WorldVerdict:
    """The verdict on a `ToyWorldReport` or its `to_dict()` (see the module docstring)."""
    table = report.to_dict() if hasattr(report, "to_dict") else report
    student = table["student"]
    student_all = student["average_at_k"]
    per_level = {level: values["average_at_k"] for level, values in student["per_difficulty"].items()}
    if not per_level:
        per_level = {"all": student_all}
    checks = []
    full, none = _teacher_at(table, 1.0), _teacher_at(table, 0.0)
    if full is None:
        checks.append(Check("teacher lead", False, "the report has no teacher row at α = 1"))
    else:
        lead = full - student_all
        checks.append(Check("teacher lead", lead >= TEACHER_LEAD,
                            f"the teacher with the whole reference (α = 1) solves {_pct(full)}, "
                            f"{100 * lead:+.1f} points from the student's {_pct(student_all)} "
                            f"(needs +{100 * TEACHER_LEAD:.0f})"))
    in_range = tuple(level for level, value in per_level.items() if STUDENT_FLOOR <= value <= STUDENT_CEILING)
    at_zero = tuple(level for level, value in per_level.items() if value < STUDENT_FLOOR)
    at_ceiling = tuple(level for level, value in per_level.items() if value > STUDENT_CEILING)
    where = "".join([f", below {_pct(STUDENT_FLOOR)} on {_levels(at_zero)}" if at_zero else "",
                     f", above {_pct(STUDENT_CEILING)} on {_levels(at_ceiling)}" if at_ceiling else ""])
    checks.append(Check("student range", 2 * len(in_range) > len(per_level),
                        f"the student is between {_pct(STUDENT_FLOOR)} and {_pct(STUDENT_CEILING)} on "
                        f"{len(in_range)} of {len(per_level)} levels{where} (needs more than half)"))
    if full is None or none is None:
        checks.append(Check("exposure", False, "the report has no teacher rows at α = 0 and α = 1"))
    else:
        effect = full - none
        checks.append(Check("exposure", effect >= EXPOSURE_EFFECT,
                            f"revealing the reference moves the teacher from {_pct(none)} (α = 0) to {_pct(full)} "
                            f"(α = 1), {100 * effect:+.1f} points (needs +{100 * EXPOSURE_EFFECT:.0f})"))
    headroom = table.get("headroom")
    if headroom:
        over = headroom["change"] > 2 * headroom["standard_error"]
        change, se = 100 * headroom["change"], 100 * headroom["standard_error"]
        checks.append(Check("supervision moves the student", over,
                            f"{headroom['steps']} supervised steps move the student by {change:+.1f} ± {se:.1f} "
                            f"points ({'over' if over else 'not over'} 2 SE)"))
    return WorldVerdict(tuple(checks), tuple(per_level), in_range, at_zero, at_ceiling)


def _levels(levels: list[str]) -> str:
    names = [level if level in ("all", "unknown") else f"d{level}" for level in levels]
    return ", ".join(names)
