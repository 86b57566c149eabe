"""The toy task: deterministic problems, independently checked answers, a step checker."""

from __future__ import annotations

import ast
import random
import re

import pytest

from atesd.data import load_problems, write_problems
from atesd.reveal import reveal, split_steps
from atesd.toy import task


def _independent_values(expression: str) -> list[int]:
    """Every operation's value, computed by Python's own parser and arithmetic (not atesd.toy)."""
    tree = ast.parse(expression, mode="eval")
    return [eval(compile(ast.Expression(node), "<toy>", "eval"))  # noqa: S307 (digits and + - * only)
            for node in ast.walk(tree) if isinstance(node, ast.BinOp)]


def test_same_seed_gives_same_problems_and_another_seed_does_not():
    first = task.toy_problems(50, seed=3)
    assert first == task.toy_problems(50, seed=3)
    assert first != task.toy_problems(50, seed=4)
    assert first != task.toy_problems(50, seed=3, split="test")


def test_every_answer_matches_an_independent_evaluation():
    cfg = task.TaskConfig()
    for problem in task.toy_problems(500, seed=0):
        expression = re.fullmatch(r"Evaluate (.+)\.", problem.problem).group(1)
        assert re.fullmatch(r"[\d+\-*()]+", expression)
        values = _independent_values(expression)
        assert problem.answer == str(values[0])  # ast.walk yields the outermost operation first
        assert problem.solution.endswith(f"The answer is \\boxed{{{values[0]}}}.")
        assert all(0 <= v <= cfg.max_value for v in values)
        assert len(values) == cfg.ops_per_level[problem.difficulty - 1]


def test_every_step_of_a_reference_solution_is_true_arithmetic():
    for problem in task.toy_problems(200, seed=1):
        steps, _ = split_steps(problem.solution)
        for step in steps:
            left, result = step.split("=")
            assert eval(left) == int(result)  # noqa: S307


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


def test_parse_problem_inverts_problem_text():
    for p in task.toy_problems(50, seed=0):
        assert task.problem_text(task.parse_problem(p.problem)) == p.problem


def test_reference_solutions_pass_the_step_checker():
    for p in task.toy_problems(2000, seed=1):
        result = task.check_steps(p.problem, p.solution)
        assert result.first_error is None and result.answer_correct
        assert len(result.step_spans) == len(split_steps(p.solution)[0])


def test_another_valid_step_order_is_correct_yet_differs_from_the_reference():
    rng = random.Random(0)
    differing = 0
    for p in task.toy_problems(50, seed=2, levels=[5]):
        root = task.parse_problem(p.problem)
        other = task.solution_text(root, task.random_order(root, rng))
        assert task.check_steps(p.problem, other).first_error is None
        differing += other != p.solution
    assert differing > 15  # most 5-operation trees have 2 to 8 valid orders


def test_solution_order_recovers_the_reference_order():
    rng = random.Random(0)
    for p in task.toy_problems(30, seed=4):
        root = task.parse_problem(p.problem)
        order = task.random_order(root, rng)
        assert task.solution_text(root, task.solution_order(p.problem, task.solution_text(root, order))) \
            == task.solution_text(root, order)


def test_checker_finds_the_corrupted_step_as_the_first_error():
    rng = random.Random(0)
    kinds = set()
    for p in task.toy_problems(200, seed=3):
        root = task.parse_problem(p.problem)
        text, wrong = task.corrupted_solution(root, task.random_order(root, rng), rng)
        result = task.check_steps(p.problem, text)
        assert result.first_error == wrong and not result.answer_correct
        kinds.add(result.error_kind)
    assert kinds == {"wrong_operands", "arithmetic"}


def test_corrupted_solution_continues_consistently_after_the_wrong_step():
    rng = random.Random(1)
    for p in task.toy_problems(50, seed=5, levels=[4, 5]):
        root = task.parse_problem(p.problem)
        text, wrong = task.corrupted_solution(root, task.random_order(root, rng), rng)
        steps, final = split_steps(text)
        assert all(eval(step.split("=")[0]) == int(step.split("=")[1])  # noqa: S307
                   for i, step in enumerate(steps) if i != wrong)
        assert final == f"The answer is \\boxed{{{steps[-1].split('=')[1]}}}."


PROBLEM = "Evaluate (3+4)*2."


def test_checker_reports_spans_of_steps_and_answer_line():
    completion = "3+4=7\n\n7*2=15\n\nThe answer is \\boxed{15}."
    result = task.check_steps(PROBLEM, completion)
    assert [completion[s:e] for s, e in result.step_spans] == ["3+4=7", "7*2=15"]
    assert completion[slice(*result.answer_span)] == "The answer is \\boxed{15}."
    assert (result.first_error, result.error_kind, result.order) == (1, "arithmetic", ("L",))


@pytest.mark.parametrize("completion, first_error, kind", [
    ("3+4=7\n\n7*2=14\n\nThe answer is \\boxed{14}.", None, None),
    ("7*2=14\n\n3+4=7\n\nThe answer is \\boxed{14}.", 0, "wrong_operands"),  # used before computed
    ("3+4=7\n\n8*2=16\n\nThe answer is \\boxed{16}.", 1, "wrong_operands"),  # miscopied value
    ("3+4=8\n\n8*2=16\n\nThe answer is \\boxed{16}.", 0, "arithmetic"),
    ("3+4=7\n\n7*2=14", 2, "missing_answer"),
    ("3+4=7\n\nThe answer is \\boxed{14}.", 1, "incomplete"),
    ("3+4=7\n\n7*2=14\n\nThe answer is \\boxed{13}.", 2, "wrong_answer"),
    ("seven\n\nThe answer is \\boxed{14}.", 0, "format"),
    ("3+4=7\n\n3+4=7\n\nThe answer is \\boxed{14}.", 1, "wrong_operands"),  # reduced twice
])
def test_checker_names_the_first_error_and_its_kind(completion, first_error, kind):
    result = task.check_steps(PROBLEM, completion)
    assert (result.first_error, result.error_kind) == (first_error, kind)


def test_checker_accepts_either_of_two_identical_operations():
    problem = "Evaluate ((19-4)+11)+((19-4)+14)."
    for completion in ("19-4=15\n\n15+14=29\n\n19-4=15\n\n15+11=26\n\n26+29=55\n\nThe answer is \\boxed{55}.",
                       "19-4=15\n\n15+11=26\n\n19-4=15\n\n15+14=29\n\n26+29=55\n\nThe answer is \\boxed{55}."):
        result = task.check_steps(problem, completion)
        assert result.first_error is None
        assert task.solution_text(task.parse_problem(problem), result.order) == completion


TERSE = task.TaskConfig(reference_style="terse")


def test_terse_references_are_the_same_problems_with_two_operations_per_step_where_nested():
    steps, terse = task.toy_problems(200, seed=1), task.toy_problems(200, seed=1, cfg=TERSE)
    assert [(p.problem, p.answer, p.difficulty) for p in steps] == [(p.problem, p.answer, p.difficulty) for p in terse]
    for verbose, short in zip(steps, terse):
        # written back as single operations, a terse reference is the one-operation reference in its order
        assert task.single_step_solution(short.solution) == verbose.solution
        assert task.solution_order(short.problem, short.solution) == task.solution_order(verbose.problem, verbose.solution)
        n_steps, n_terse = len(split_steps(verbose.solution)[0]), len(split_steps(short.solution)[0])
        assert (n_steps + 1) // 2 <= n_terse <= n_steps
        assert verbose.difficulty == 1 or n_terse < n_steps  # every tree of 2+ operations nests
    level5 = [len(split_steps(p.solution)[0]) for p in terse if p.difficulty == 5]
    assert sum(level5) / len(level5) < 4  # about half the one-operation steps


def test_a_terse_step_skips_the_inner_result_and_its_values_are_true():
    root = task.parse_problem("Evaluate ((20*3)-(5+4))+7.")
    order = ["LR", "LL", "L", ""]  # 5+4, 20*3, 60-9, 51+7
    assert task.terse_solution_text(root, order) == "5+4=9\n\n(20*3)-9=51\n\n51+7=58\n\nThe answer is \\boxed{58}."
    assert task.terse_solution_text(root, ["LL", "LR", "L", ""]) == (
        "20*3=60\n\n60-(5+4)=51\n\n51+7=58\n\nThe answer is \\boxed{58}.")


def test_an_unknown_reference_style_is_refused():
    with pytest.raises(ValueError, match="reference_style"):
        task.TaskConfig(reference_style="prose")


def test_top_down_references_state_the_goal_first_and_hold_every_value():
    steps = task.toy_problems(200, seed=2)
    top_down = task.toy_problems(200, seed=2, cfg=task.TaskConfig(reference_style="top_down"))
    for verbose, goal_first in zip(steps, top_down):
        assert (verbose.problem, verbose.answer) == (goal_first.problem, goal_first.answer)
        assert task.single_step_solution(goal_first.solution) == verbose.solution
        first = split_steps(goal_first.solution)[0][0]
        assert first.startswith(f"{verbose.answer}=")  # the root's value opens the solution
    root = task.parse_problem("Evaluate ((20*3)-(5+4))+7.")
    assert task.top_down_solution_text(root, ["LR", "LL", "L", ""]) == (
        "58=51+7\n\n51=60-9\n\n60=20*3\n\n9=5+4\n\nThe answer is \\boxed{58}.")
