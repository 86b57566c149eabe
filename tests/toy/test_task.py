"""The toy task: deterministic problems, independently checked answers, a step checker."""

from __future__ import annotations

import random
import re

import pytest

from atesd.data import load_problems, write_problems
from atesd.reveal import reveal, split_steps
from atesd.toy import task


def _independent_value(problem_text: str) -> tuple[int, list[int]]:
    """Evaluate a problem text without atesd.toy.task: substitute every definition into one nested
    Python expression and let Python compute it. Returns (answer, every intermediate value)."""
    lines = problem_text.splitlines()
    assert lines[0] == "Given:" and lines[-1].startswith("Find ")
    definitions = dict(line.split("=") for line in lines[1:-1])
    target = lines[-1].removeprefix("Find ").removesuffix(".")

    def expand(symbol: str) -> str:
        if symbol.isdigit():
            return symbol
        left, op, right = re.fullmatch(r"(\w+)([-+*])(\w+)", definitions[symbol]).groups()
        return f"({expand(left)} {op} {expand(right)})"

    intermediates = [eval(expand(name)) for name in definitions]  # noqa: S307 (our own digits and + - *)
    return eval(expand(target)), intermediates  # noqa: S307


def test_same_seed_gives_same_problems_and_another_seed_does_not():
    first = task.toy_problems(50, seed=3)
    assert first == task.toy_problems(50, seed=3)
    assert first != task.toy_problems(50, seed=4)
    assert first != task.toy_problems(50, seed=3, split="test")


def test_every_answer_matches_an_independent_evaluation():
    cfg = task.TaskConfig()
    for problem in task.toy_problems(300, seed=0):
        value, intermediates = _independent_value(problem.problem)
        assert problem.answer == str(value)
        assert problem.solution.endswith(f"The answer is \\boxed{{{value}}}.")
        assert all(0 <= v <= cfg.max_value for v in intermediates)


def test_higher_levels_have_more_steps_and_levels_cycle():
    cfg = task.TaskConfig()
    problems = task.toy_problems(10, seed=0, cfg=cfg)
    assert [p.difficulty for p in problems] == [1, 2, 3, 4, 5] * 2
    for p in problems:
        steps, final = split_steps(p.solution)
        assert len(steps) == cfg.ops_per_level[p.difficulty - 1]
        assert final == f"The answer is \\boxed{{{p.answer}}}."
    assert list(cfg.ops_per_level) == sorted(cfg.ops_per_level)


def test_reveal_ratio_zero_shows_only_the_answer_sentence_of_a_toy_solution():
    problem = task.toy_problems(5, seed=0)[4]
    assert reveal(problem.solution, 0.0) == f"The answer is \\boxed{{{problem.answer}}}."
    assert reveal(problem.solution, 1.0) == problem.solution


def test_toy_problems_round_trip_through_the_standard_problem_file(tmp_path):
    problems = task.toy_problems(20, seed=0)
    write_problems(tmp_path / "toy.jsonl", problems)
    assert load_problems(tmp_path / "toy.jsonl") == problems


def test_reference_solutions_pass_the_step_checker():
    for p in task.toy_problems(100, seed=1):
        result = task.check_steps(p.problem, p.solution)
        assert result.first_error is None and result.answer_correct
        assert len(result.step_spans) == len(split_steps(p.solution)[0])


def test_another_valid_step_order_is_correct_yet_differs_from_the_reference():
    rng = random.Random(0)
    differing = 0
    for p in task.toy_problems(50, seed=2, levels=[5]):
        program = task.parse_problem(p.problem)
        other = task.solution_text(program, task.random_order(program, rng))
        assert task.check_steps(p.problem, other).first_error is None
        differing += other != p.solution
    assert differing > 20  # most 5-operation trees have 2 to 8 valid orders


def test_checker_finds_the_corrupted_step_as_the_first_error():
    rng = random.Random(0)
    for p in task.toy_problems(100, seed=3):
        program = task.parse_problem(p.problem)
        text, wrong = task.corrupted_solution(program, task.random_order(program, rng), rng)
        result = task.check_steps(p.problem, text)
        assert result.first_error == wrong
        assert result.error_kind in {"wrong_operand_value", "arithmetic"}
        assert not result.answer_correct


def test_checker_flags_a_variable_used_before_it_is_computed():
    problem = "Given:\nb=a*2\na=3+4\nFind b."
    completion = "b=a*2=7*2=14\n\na=3+4=7\n\nThe answer is \\boxed{14}."
    result = task.check_steps(problem, completion)
    assert (result.first_error, result.error_kind, result.answer_correct) == (0, "not_yet_computed", True)


def test_checker_reports_spans_of_steps_and_answer_line():
    problem = "Given:\nb=a*2\na=3+4\nFind b."
    completion = "a=3+4=7\n\nb=a*2=7*2=15\n\nThe answer is \\boxed{15}."
    result = task.check_steps(problem, completion)
    assert [completion[s:e] for s, e in result.step_spans] == ["a=3+4=7", "b=a*2=7*2=15"]
    assert completion[slice(*result.answer_span)] == "The answer is \\boxed{15}."
    assert (result.first_error, result.error_kind) == (1, "arithmetic")


@pytest.mark.parametrize("completion, kind", [
    ("a=3+4=7\n\nb=a*2=7*2=14", "missing_answer"),
    ("a=3+4=7\n\nThe answer is \\boxed{14}.", "incomplete"),
    ("a=3+4=7\n\nb=a*2=7*2=14\n\nThe answer is \\boxed{13}.", "wrong_answer"),
    ("a equals 7\n\nThe answer is \\boxed{14}.", "format"),
    ("a=3+4=7\n\na=3+4=7\n\nThe answer is \\boxed{14}.", "repeated_variable"),
    ("c=3+4=7\n\nThe answer is \\boxed{14}.", "unknown_variable"),
    ("a=3*4=12\n\nThe answer is \\boxed{14}.", "wrong_definition"),
    ("a=3+4=7\n\nb=a*2=8*2=16\n\nThe answer is \\boxed{16}.", "wrong_operand_value"),
])
def test_checker_names_the_kind_of_error(completion, kind):
    result = task.check_steps("Given:\nb=a*2\na=3+4\nFind b.", completion)
    assert result.error_kind == kind


def test_parse_problem_inverts_problem_text():
    for p in task.toy_problems(20, seed=0):
        assert task.problem_text(task.parse_problem(p.problem)) == p.problem
