"""The toy reasoning task: evaluate a small program of named arithmetic steps.

A problem lists the nodes of a random expression tree as named definitions, in shuffled order:

    Given:
    d=c-9
    a=7+3
    c=a*b
    b=12-4
    Find d.

Its reference solution computes one node per step, in a random valid (topological) order, steps
separated by blank lines, then a final sentence with the boxed answer:

    a=7+3=10

    b=12-4=8

    c=a*b=10*8=80

    d=c-9=80-9=71

    The answer is \\boxed{71}.

Any order in which every variable is computed after its operands is correct, so a rollout can be
right and still differ from the reference (a tree of 5 operations has up to 8 valid orders). The
difficulty level sets the number of operations; every intermediate value stays in [0, 99]. The
`check_steps` diagnostic parses a completion and finds its first wrong step, so later analyses can
split per-token quantities into before / at / after the first error and the answer line.

Where this departs from the toy-notes' first toy (not from a paper; the papers use real data):
1. Sub-results are named, so a step can be checked on its own and tracking the state is a lookup.
2. Definitions are listed in shuffled order: picking a variable whose operands are known is part of
   the task, and the order of independent sub-computations is free.
3. No spaces inside definitions and steps, and one definition per line: a variable is then the same
   token wherever it appears (byte-level BPE gives " c" and "c" different ids), which a tiny model
   needs to copy names reliably, and steps are ~20% shorter.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from atesd.data import Problem

OPERATORS = ("+", "-", "*")
VARIABLE_NAMES = "abcdefghijklmnopqrstuvwxyz"
SOURCE = "atesd-toy"

Operand = int | str  # a number (leaf) or the name of another definition


@dataclass(frozen=True)
class Definition:
    """One node of the expression tree: `name = left op right`."""

    name: str
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True)
class Program:
    """A toy problem: its definitions in the order the problem lists them, and the asked variable."""

    definitions: tuple[Definition, ...]
    target: str

    def by_name(self) -> dict[str, Definition]:
        return {d.name: d for d in self.definitions}


@dataclass(frozen=True)
class TaskConfig:
    """How toy problems are drawn.

    ops_per_level: the number of operations (= solution steps) of difficulty level 1, 2, ...
    max_leaf: numbers written in the problem are drawn from 1..max_leaf.
    max_value: every intermediate value stays in [0, max_value].
    """

    ops_per_level: tuple[int, ...] = (1, 2, 3, 4, 5)
    max_leaf: int = 20
    max_value: int = 99

    def __post_init__(self) -> None:
        if not self.ops_per_level or min(self.ops_per_level) < 1:
            raise ValueError("task.ops_per_level needs at least one level, each with >= 1 operation")
        if max(self.ops_per_level) > len(VARIABLE_NAMES):
            raise ValueError(f"task.ops_per_level allows at most {len(VARIABLE_NAMES)} operations")
        if self.max_leaf < 1 or self.max_value < self.max_leaf:
            raise ValueError("task needs 1 <= max_leaf <= max_value")

    @property
    def levels(self) -> range:
        return range(1, len(self.ops_per_level) + 1)


def apply(left: int, op: str, right: int) -> int:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operator {op!r}")


def evaluate(program: Program) -> dict[str, int]:
    """The value of every variable (recursive evaluation of the tree)."""
    defs = program.by_name()
    values: dict[str, int] = {}

    def value(operand: Operand) -> int:
        if isinstance(operand, int):
            return operand
        if operand not in values:
            d = defs[operand]
            values[operand] = apply(value(d.left), d.op, value(d.right))
        return values[operand]

    for d in program.definitions:
        value(d.name)
    return values


def answer_of(program: Program) -> int:
    return evaluate(program)[program.target]


# ---------------------------------------------------------------------------------------------
# Sampling problems


def _random_tree_shape(rng: random.Random, n_ops: int) -> list[tuple[int | None, int | None]]:
    """Children of each of n_ops internal nodes (None = a leaf), node 0 the root, children > parent."""
    children: list[list[int | None]] = [[None, None]]
    while len(children) < n_ops:
        free = [(i, side) for i, c in enumerate(children) for side in (0, 1) if c[side] is None]
        parent, side = rng.choice(free)
        children[parent][side] = len(children)
        children.append([None, None])
    return [(c[0], c[1]) for c in children]


def _try_sample(rng: random.Random, n_ops: int, cfg: TaskConfig) -> Program | None:
    shape = _random_tree_shape(rng, n_ops)
    names = rng.sample(VARIABLE_NAMES, n_ops)
    values: dict[int, int] = {}
    defs: list[Definition] = []
    for node in reversed(range(n_ops)):  # children have larger indices: post-order
        operands: list[Operand] = []
        operand_values: list[int] = []
        for child in shape[node]:
            if child is None:
                leaf = rng.randint(1, cfg.max_leaf)
                operands.append(leaf)
                operand_values.append(leaf)
            else:
                operands.append(names[child])
                operand_values.append(values[child])
        valid = [op for op in OPERATORS if 0 <= apply(operand_values[0], op, operand_values[1]) <= cfg.max_value]
        if not valid:
            return None
        op = rng.choice(valid)
        values[node] = apply(operand_values[0], op, operand_values[1])
        defs.append(Definition(names[node], operands[0], op, operands[1]))
    rng.shuffle(defs)
    return Program(tuple(defs), target=names[0])


def sample_program(rng: random.Random, n_ops: int, cfg: TaskConfig) -> Program:
    """A random tree of n_ops operations whose every value lies in [0, max_value]."""
    while True:
        program = _try_sample(rng, n_ops, cfg)
        if program is not None:
            return program


def random_order(program: Program, rng: random.Random) -> list[str]:
    """A uniformly chosen ready variable at each step: a random valid (topological) order."""
    defs = program.by_name()
    done: set[str] = set()
    order: list[str] = []
    while len(order) < len(defs):
        ready = [
            d.name for d in program.definitions
            if d.name not in done and all(isinstance(o, int) or o in done for o in (d.left, d.right))
        ]
        name = rng.choice(ready)
        done.add(name)
        order.append(name)
    return order


# ---------------------------------------------------------------------------------------------
# Text


def problem_text(program: Program) -> str:
    listed = "".join(f"{d.name}={d.left}{d.op}{d.right}\n" for d in program.definitions)
    return f"Given:\n{listed}Find {program.target}."


def step_text(d: Definition, left_value: int, right_value: int, result: int) -> str:
    """`c=a*b=10*8=80`; without the middle part when both operands are numbers."""
    if isinstance(d.left, int) and isinstance(d.right, int):
        return f"{d.name}={d.left}{d.op}{d.right}={result}"
    return f"{d.name}={d.left}{d.op}{d.right}={left_value}{d.op}{right_value}={result}"


def answer_sentence(answer: int | str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def solution_text(program: Program, order: Sequence[str]) -> str:
    """The step-by-step solution computing the variables in `order`."""
    defs = program.by_name()
    values = evaluate(program)
    steps = []
    for name in order:
        d = defs[name]
        lv = d.left if isinstance(d.left, int) else values[d.left]
        rv = d.right if isinstance(d.right, int) else values[d.right]
        steps.append(step_text(d, lv, rv, values[name]))
    return "\n\n".join(steps + [answer_sentence(values[program.target])])


def corrupted_solution(program: Program, order: Sequence[str], rng: random.Random) -> tuple[str, int]:
    """A student-style wrong solution: one step in `order` goes wrong, the later steps continue
    consistently with the wrong value (correct arithmetic on the values written so far).

    Returns (text, index of the wrong step). Two kinds of error, as toy-notes observed in rollouts:
    a miscopied operand value (state tracking) or an arithmetic slip in the result.
    """
    defs = program.by_name()
    while True:
        k = rng.randrange(len(order))
        written: dict[str, int] = {}
        steps = []
        for i, name in enumerate(order):
            d = defs[name]
            lv = d.left if isinstance(d.left, int) else written[d.left]
            rv = d.right if isinstance(d.right, int) else written[d.right]
            result = apply(lv, d.op, rv)
            if i == k:
                variable_sides = [s for s, o in ((0, d.left), (1, d.right)) if isinstance(o, str)]
                if variable_sides and rng.random() < 0.5:
                    wrong = max(0, (lv if variable_sides[0] == 0 else rv) + rng.choice((-2, -1, 1, 2, 10, -10)))
                    if variable_sides[0] == 0:
                        lv = wrong
                    else:
                        rv = wrong
                    result = apply(lv, d.op, rv)
                else:
                    result = result + rng.choice((-2, -1, 1, 2, 10, -10))
            if result < 0:
                break
            written[name] = result
            steps.append(step_text(d, lv, rv, result))
        else:
            if written[program.target] != answer_of(program):
                return "\n\n".join(steps + [answer_sentence(written[program.target])]), k


def toy_problems(n: int, seed: int, cfg: TaskConfig = TaskConfig(), split: str = "train",
                 levels: Sequence[int] | None = None) -> list[Problem]:
    """n problems with equal shares of each level (cycling), deterministic for (seed, split)."""
    rng = random.Random(f"{seed}:{split}")
    chosen = list(levels) if levels is not None else list(cfg.levels)
    problems = []
    for i in range(n):
        level = chosen[i % len(chosen)]
        program = sample_program(rng, cfg.ops_per_level[level - 1], cfg)
        problems.append(Problem(
            id=f"toy-{split}-{i:06d}",
            problem=problem_text(program),
            solution=solution_text(program, random_order(program, rng)),
            answer=str(answer_of(program)),
            difficulty=level,
            source=SOURCE,
        ))
    return problems


# ---------------------------------------------------------------------------------------------
# Parsing and the step checker (diagnostics only)

_DEFINITION = re.compile(r"^([a-z])=([a-z]|\d+)([-+*])([a-z]|\d+)$", re.MULTILINE)
_PROBLEM = re.compile(r"^Given:\n((?:[^\n]+\n)+)Find ([a-z])\.$")
_STEP = re.compile(r"^([a-z])=([a-z]|\d+)([-+*])([a-z]|\d+)=(?:(\d+)([-+*])(\d+)=)?(-?\d+)$")
_BOXED = re.compile(r"\\boxed\{(-?\d+)\}")


def _operand(token: str) -> Operand:
    return int(token) if token.isdigit() else token


def parse_problem(text: str) -> Program:
    """The program behind a problem text written by `problem_text`."""
    match = _PROBLEM.match(text.strip())
    if match is None:
        raise ValueError(f"not a toy problem: {text[:80]!r}")
    defs = tuple(
        Definition(name, _operand(left), op, _operand(right))
        for name, left, op, right in _DEFINITION.findall(match.group(1))
    )
    return Program(defs, target=match.group(2))


@dataclass(frozen=True)
class StepCheck:
    """Where a completion goes wrong.

    step_spans: (start, end) character offsets of each paragraph before the answer line.
    answer_span: offsets of the paragraph holding the last \\boxed{}, or None.
    first_error: index into step_spans of the first wrong step; len(step_spans) when every step is
        right but the answer line is wrong or missing; None when the whole completion is right.
    error_kind: "format", "unknown_variable", "repeated_variable", "wrong_definition",
        "not_yet_computed", "wrong_operand_value", "arithmetic", "incomplete" (the asked variable
        was never computed), "wrong_answer", "missing_answer", or None.
    answer_correct: the boxed answer equals the true value.
    """

    step_spans: tuple[tuple[int, int], ...]
    answer_span: tuple[int, int] | None
    first_error: int | None
    error_kind: str | None
    answer_correct: bool


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    for match in re.finditer(r"[^\n]+(?:\n(?!\n)[^\n]*)*", text):
        if match.group().strip():
            yield match.start(), match.end()


def _step_error(match: re.Match | None, defs: dict[str, Definition], values: dict[str, int],
                done: set[str]) -> str | None:
    if match is None:
        return "format"
    name, left, op, right, lv, mid_op, rv, result = match.groups()
    if name not in defs:
        return "unknown_variable"
    if name in done:
        return "repeated_variable"
    d = defs[name]
    if (_operand(left), op, _operand(right)) != (d.left, d.op, d.right):
        return "wrong_definition"
    symbolic = [o for o in (d.left, d.right) if isinstance(o, str)]
    if any(o not in done for o in symbolic):
        return "not_yet_computed"
    if symbolic and (lv is None or mid_op != op):
        return "format"
    if not symbolic and lv is not None:
        return "format"
    true_left = values[d.left] if isinstance(d.left, str) else d.left
    true_right = values[d.right] if isinstance(d.right, str) else d.right
    if lv is not None and (int(lv), int(rv)) != (true_left, true_right):
        return "wrong_operand_value"
    if int(result) != values[name]:
        return "arithmetic"
    return None


def check_steps(problem: str, completion: str) -> StepCheck:
    """Find the first wrong step of a completion against the problem's true values.

    A step is right when it computes a listed variable not computed before, with the definition's
    operands, after its variable operands, with their true values, and the true result. Any order
    satisfying this is accepted. After the first error nothing more is judged except the answer.
    """
    program = parse_problem(problem)
    defs = program.by_name()
    values = evaluate(program)
    spans = list(_paragraphs(completion))
    answer_span = next((s for s in reversed(spans) if _BOXED.search(completion[s[0]:s[1]])), None)
    steps = [s for s in spans if s != answer_span]
    if answer_span is not None:
        steps = [s for s in steps if s[0] < answer_span[0]]
    boxed = _BOXED.findall(completion[answer_span[0]:answer_span[1]]) if answer_span else []
    answer_correct = bool(boxed) and int(boxed[-1]) == values[program.target]

    done: set[str] = set()
    first_error, kind = None, None
    for i, (start, end) in enumerate(steps):
        error = _step_error(_STEP.match(completion[start:end].strip()), defs, values, done)
        if error is not None:
            first_error, kind = i, error
            break
        done.add(_STEP.match(completion[start:end].strip()).group(1))
    if first_error is None:
        if program.target not in done:
            first_error, kind = len(steps), "incomplete"
        elif answer_span is None:
            first_error, kind = len(steps), "missing_answer"
        elif not answer_correct:
            first_error, kind = len(steps), "wrong_answer"
    return StepCheck(tuple(steps), answer_span, first_error, kind, answer_correct)
