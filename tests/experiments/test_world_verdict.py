"""world_verdict: one plain line from the measured tables; the shipped world's stored report is usable."""

from __future__ import annotations

import json

from atesd.experiments.protocol import TOY_PROTOCOL
from atesd.experiments.world_build import REPORT_FILE
from atesd.experiments.world_verdict import world_verdict
from atesd.toy.build import SHIPPED_DIR, WORLD_FILE


def _table(student: dict[str, float], teacher: dict[float, float], change: float | None = None,
           se: float = 0.01) -> dict:
    """A report's to_dict() with these numbers (each level weighs the same)."""
    overall = sum(student.values()) / len(student)
    return {"student": {"average_at_k": overall,
                        "per_difficulty": {level: {"average_at_k": v, "n": 40} for level, v in student.items()}},
            "teacher": [{"reveal_ratio": r, "accuracy": a, "per_difficulty": {}} for r, a in teacher.items()],
            "headroom": None if change is None else {"steps": 300, "change": change, "standard_error": se}}


def test_the_shipped_worlds_stored_report_says_usable():
    world = SHIPPED_DIR / "toy-1m"
    stored = json.loads((world / REPORT_FILE).read_text())
    assert stored["world_key"] == json.loads((world / WORLD_FILE).read_text())["key"]  # measured on this world
    assert stored["protocol"] == TOY_PROTOCOL.to_dict()
    verdict = world_verdict(stored)
    assert verdict.usable and verdict.line().startswith("Verdict: this world is usable for self-distillation")
    assert [c.name for c in verdict.checks] == ["teacher lead", "student range", "exposure",
                                                "supervision moves the student"]
    assert stored["verdict"]["usable"]


def test_the_world_of_issue_27_is_not_usable_though_supervision_moves_it():
    # student 0.6% (2.9% on level 1, 0 above), teacher 6.5% with the whole reference, control +0.9 ± 0.4
    table = _table({"1": 0.029, "2": 0.0, "3": 0.0, "4": 0.0, "5": 0.0}, {0.0: 0.05, 1.0: 0.065}, 0.009, 0.004)
    verdict = world_verdict(table)
    assert not verdict.usable
    failed = {c.name for c in verdict.checks if not c.passed}
    assert failed == {"teacher lead", "student range", "exposure"}
    line = verdict.line()
    assert line.startswith("Verdict: this world is NOT usable for self-distillation: the teacher with the whole")
    assert "below 1.0% on d2, d3, d4, d5" in line and "1 of 5 levels" in line
    assert verdict.levels_at_zero == ("2", "3", "4", "5") and verdict.levels_in_range == ("1",)


def test_each_criterion_alone_makes_a_world_not_usable():
    good = dict(student={"1": 0.7, "2": 0.4, "3": 0.1}, teacher={0.0: 0.6, 1.0: 0.9}, change=0.05)
    assert world_verdict(_table(**good)).usable
    cases = {
        "teacher lead": dict(good, teacher={0.0: 0.3, 1.0: 0.45}),
        "student range": dict(good, student={"1": 0.99, "2": 0.97, "3": 0.4}, teacher={0.0: 0.6, 1.0: 0.99}),
        "exposure": dict(good, teacher={0.0: 0.88, 1.0: 0.9}),
        "supervision moves the student": dict(good, change=0.01),
    }
    for name, numbers in cases.items():
        verdict = world_verdict(_table(**numbers))
        assert [c.name for c in verdict.checks if not c.passed] == [name], name
        assert verdict.line().split(": ", 2)[2].startswith(next(c.reason for c in verdict.checks if c.name == name))


def test_a_report_without_difficulties_or_control_is_judged_on_the_whole_split():
    table = _table({"all": 0.3}, {0.0: 0.5, 1.0: 0.8})
    table["student"]["per_difficulty"] = {}
    verdict = world_verdict(table)
    assert verdict.usable and verdict.levels == ("all",) and len(verdict.checks) == 3
