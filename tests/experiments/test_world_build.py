"""atesd toy build end to end: the plan comes first, a world that cannot teach says so and exits 3."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from atesd.cli import main
from atesd.data import Problem, write_problems
from atesd.experiments.world_build import (REPORT_FILE, WORLD_NOT_USABLE, CommandPlan, Phase, request_key,
                                           suggestions)
from atesd.experiments.world_verdict import world_verdict
from atesd.toy.build import ToyWorldConfig, cache_root, cached_world


def _sums(n: int) -> list[Problem]:
    """Short multi-step sums, levels 1-3 (level = additions)."""
    problems = []
    for i in range(n):
        level = 1 + i % 3
        terms = [(7 * i + 3 * j) % 9 + 1 for j in range(level + 1)]
        steps, total = [], terms[0]
        for term in terms[1:]:
            steps.append(f"{total} + {term} = {total + term}.")
            total += term
        problems.append(Problem(id=f"s{i}", problem="Add " + ", ".join(map(str, terms)) + ".",
                                solution="\n\n".join(steps + [f"The answer is \\boxed{{{total}}}."]),
                                answer=str(total), difficulty=level))
    return problems


@pytest.mark.slow
def test_a_tiny_budget_world_is_not_usable_says_why_and_exits_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATESD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "sums.jsonl"
    write_problems(data, _sums(60))
    args = ["toy", "build", "--preset", "toy-test", "--threads", "1", "--data", str(data), "--minutes", "0.1",
            "--out", str(tmp_path / "world")]
    assert main(args) == WORLD_NOT_USABLE
    out = capsys.readouterr().out
    assert out.index("whole command: about") < out.index("toy world: ") < out.index("Student, sampled")
    for phase in ("prepare", "warm start", "student", "teacher, α = 0 … 1", "supervised control",
                  "student after control"):
        assert f"\n  {phase} " in out
    verdict = next(line for line in out.splitlines() if line.startswith("Verdict:"))
    assert verdict.startswith("Verdict: this world is NOT usable for self-distillation: the teacher with the whole")
    assert "What to change" in out and "--minutes" in out.split("What to change", 1)[1]
    assert "a larger preset: atesd toy build" in out and "--preset toy-1m" in out
    assert "the plan said" in out
    stored = json.loads((tmp_path / "world" / REPORT_FILE).read_text())
    assert stored["verdict"] == {"usable": False, "line": verdict}
    assert stored["wall_seconds"] > 0 and stored["plan"]["total_seconds"] > 0
    cfg = ToyWorldConfig(preset="toy-test", data=str(data), threads=1)
    world = cached_world("request", request_key(cfg, 0.1, True))  # the same command again reuses it
    assert world is not None and world.parent == cache_root()


def test_the_plan_counts_the_time_already_spent_measuring():
    plan = CommandPlan((Phase("warm start", 90.0, "100 steps"), Phase("student", 30.0, "10 problems")), spent=6.0)
    assert plan.total == 126.0
    text = plan.describe()
    assert "whole command: about 2.1 min" in text and "in 6 s" in text
    assert plan.to_dict()["total_seconds"] == 126.0


def test_a_world_not_usable_gets_more_minutes_a_larger_preset_and_easier_levels_with_their_times(tmp_path):
    data = tmp_path / "sums.jsonl"
    write_problems(data, _sums(30))
    cfg = ToyWorldConfig(preset="toy-1m", data=str(data))
    cfg = replace(cfg, warm_start=replace(cfg.warm_start, steps=316))
    plan = CommandPlan((Phase("warm start", 316 * 3.0, "316 steps"), Phase("supervised control", 240.0, "300 steps")),
                       spent=60.0, warm_start_step=3.0)  # 1 + 15.8 + 4 = 20.8 min
    table = {"student": {"average_at_k": 0.006, "per_difficulty": {
        str(level): {"average_at_k": value, "n": 40} for level, value in zip(range(1, 6), (0.029, 0, 0, 0, 0))}},
        "teacher": [{"reveal_ratio": 0.0, "accuracy": 0.05}, {"reveal_ratio": 1.0, "accuracy": 0.065}],
        "headroom": None}
    lines = suggestions(cfg, world_verdict(table), plan, minutes=15)  # toy-5m: 1 + 4.67 × 19.8 min
    assert lines[0] == (f"more minutes: atesd toy build --data {data} --minutes 37 (about 37 min: 632 warm-start "
                        "steps instead of 316)")  # 20.8 min + 316 × 3 s
    assert lines[1].startswith(f"a larger preset: atesd toy build --data {data} --preset toy-5m --minutes 94 "
                               "(about 94 min: the same 316 steps at ~4.7× the seconds each")
    assert lines[2] == (f"easier levels only: atesd toy build --data {data} --max-level 1 --minutes 15 (about 15 min; "
                        "the student solves under 1% above level 1)")
