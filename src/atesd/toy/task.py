"""The toy reasoning task: evaluate an arithmetic expression one operation at a time.

A problem is a random expression tree with 1 to 5 operations (`+ - *`), operands 1..20, every
intermediate value in [0, 99]:

    Evaluate ((20*3)-(5+4))+7.

Its reference solution reduces one operation whose operands are both numbers per step, in a random
valid order, steps separated by blank lines, then a final sentence with the boxed answer:

    5+4=9

    20*3=60

    60-9=51

    51+7=58

    The answer is \\boxed{58}.

Any order that reduces every operation after its operands is correct (a tree of 5 operations has up
to 8), so a rollout can be right and still differ from the reference. `TaskConfig.reference_style`
can write the reference in a notation the student's own solutions never use, as a stronger solver
would: "terse" reduces an operation together with the operation it consumes, whose result is not
written (`(20*3)-9=51`: about k/2 steps at level k); "top_down" states the goal first and works
down to the numbers, every value written (`58=51+7`, then `51=60-9`, ...: the one-operation steps
in reverse, each result first). The student still solves one operation per step, bottom up
(`single_step_solution` turns either reference back into such steps). The difficulty level sets the
number of operations. A step names only values, so the solver tracks which parts are already
reduced: the errors small models make are mostly such state-tracking errors (wrong operands), a few
arithmetic ones. `check_steps` replays a completion against the tree and finds its first wrong
step, so later analyses can split per-token quantities into before / at / after the first error
and the answer line.

This module is longer than 400 lines because the task is one idea: the tree, the problem and
solution texts in both notations, and the checker that replays a completion against the tree all
read and write the same representation, and each of them is short.

Where this departs from anything published: the papers use real math data; this is our own synthetic
task, with a seeded generator, a step checker and student-style wrong solutions for the warm start.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from atesd.data import Problem

OPERATORS = ("+", "-", "*")
REFERENCE_STYLES = ("steps", "terse", "top_down")
SOURCE = "atesd-toy"


@dataclass(frozen=True)
class Node:
    """One operation of the expression tree; an operand is a number (leaf) or another Node."""

    left: "Node | int"
    op: str
    right: "Node | int"


Path = str  # where a node sits: "" the root, "L"/"R" its children, "LR" the right child of "L", ...


@dataclass(frozen=True)
class TaskConfig:
    """How toy problems are drawn.

    ops_per_level: the number of operations (= solution steps) of difficulty level 1, 2, ...
    max_leaf: numbers written in the problem are drawn from 1..max_leaf.
    max_value: every intermediate value stays in [0, max_value].
    reference_style: "steps" (one operation per reference step, the student's own notation) or
        "terse" (a stronger solver's: two nested operations per step where the order allows it,
        the inner result skipped; `terse_solution_text`) or "top_down" (goal first: the steps in
        reverse, each written `result=left op right`; `top_down_solution_text`).
    """

    ops_per_level: tuple[int, ...] = (1, 2, 3, 4, 5)
    max_leaf: int = 20
    max_value: int = 99
    reference_style: str = "steps"

    def __post_init__(self) -> None:
        if self.reference_style not in REFERENCE_STYLES:
            raise ValueError(f"task.reference_style must be one of {REFERENCE_STYLES}, got {self.reference_style!r}")
        if not self.ops_per_level or min(self.ops_per_level) < 1:
            raise ValueError("task.ops_per_level needs at least one level, each with >= 1 operation")
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


def value_of(operand: Node | int) -> int:
    if isinstance(operand, int):
        return operand
    return apply(value_of(operand.left), operand.op, value_of(operand.right))


def nodes(root: Node) -> dict[Path, Node]:
    """Every operation of the tree by path, children before parents (post-order)."""
    found: dict[Path, Node] = {}

    def visit(node: Node | int, path: Path) -> None:
        if isinstance(node, Node):
            visit(node.left, path + "L")
            visit(node.right, path + "R")
            found[path] = node

    visit(root, "")
    return found


# ---------------------------------------------------------------------------------------------
# Sampling problems


def _try_sample(rng: random.Random, n_ops: int, cfg: TaskConfig) -> Node | None:
    """A random tree shape (each new operation replaces a random leaf), then operators chosen
    bottom-up among those that keep the value in [0, max_value]."""
    shape: dict[Path, None] = {"": None}
    while len(shape) < n_ops:
        free = [p + side for p in shape for side in "LR" if p + side not in shape]
        shape[rng.choice(free)] = None

    def build(path: Path) -> Node | int | None:
        if path not in shape:
            return rng.randint(1, cfg.max_leaf)
        left, right = build(path + "L"), build(path + "R")
        if left is None or right is None:
            return None
        lv, rv = value_of(left), value_of(right)
        valid = [op for op in OPERATORS if 0 <= apply(lv, op, rv) <= cfg.max_value]
        return Node(left, rng.choice(valid), right) if valid else None

    root = build("")
    return root if isinstance(root, Node) else None


def sample_expression(rng: random.Random, n_ops: int, cfg: TaskConfig) -> Node:
    """A random tree of n_ops operations whose every value lies in [0, max_value]."""
    while True:
        root = _try_sample(rng, n_ops, cfg)
        if root is not None:
            return root


def random_order(root: Node, rng: random.Random) -> list[Path]:
    """A uniformly chosen ready operation at each step: a random valid order of reductions."""
    remaining = nodes(root)
    done: set[Path] = set()
    order: list[Path] = []
    while remaining:
        ready = [p for p, n in remaining.items()
                 if all(not isinstance(c, Node) or p + s in done for c, s in ((n.left, "L"), (n.right, "R")))]
        path = rng.choice(ready)
        done.add(path)
        order.append(path)
        del remaining[path]
    return order


# ---------------------------------------------------------------------------------------------
# Text


def expression_text(node: Node | int, top: bool = True) -> str:
    """`((20*3)-(5+4))+7`: every operation but the outermost in parentheses."""
    if isinstance(node, int):
        return str(node)
    inner = f"{expression_text(node.left, False)}{node.op}{expression_text(node.right, False)}"
    return inner if top else f"({inner})"


def problem_text(root: Node) -> str:
    return f"Evaluate {expression_text(root)}."


def step_text(left: int, op: str, right: int, result: int) -> str:
    return f"{left}{op}{right}={result}"


def answer_sentence(answer: int | str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def _written_solution(root: Node, order: Sequence[Path], wrong_step: int | None = None,
                      rng: random.Random | None = None) -> tuple[str, int]:
    """Steps in `order`, each computed from the values written before it; optionally one step goes
    wrong (see corrupted_solution). Returns (text, the value written for the root)."""
    table = nodes(root)
    written: dict[Path, int] = {}
    steps = []
    for i, path in enumerate(order):
        node = table[path]
        lv = node.left if isinstance(node.left, int) else written[path + "L"]
        rv = node.right if isinstance(node.right, int) else written[path + "R"]
        result = apply(lv, node.op, rv)
        if i == wrong_step:
            delta = rng.choice((-2, -1, 1, 2, -10, 10))
            if rng.random() < 0.5:  # a miscopied operand: the step computes on a wrong number
                if rng.random() < 0.5:
                    lv = max(0, lv + delta)
                else:
                    rv = max(0, rv + delta)
                result = apply(lv, node.op, rv)
            else:  # an arithmetic slip
                result = max(0, result + delta)
        written[path] = result
        steps.append(step_text(lv, node.op, rv, result))
    return "\n\n".join(steps + [answer_sentence(written[""])]), written[""]


def solution_text(root: Node, order: Sequence[Path]) -> str:
    """The step-by-step solution reducing the operations in `order`."""
    return _written_solution(root, order)[0]


def terse_solution_text(root: Node, order: Sequence[Path]) -> str:
    """The solution reducing the operations in `order` in the terse notation: a step whose operation
    consumes the result of the step just before it is written together with it, the inner operation
    in parentheses and its result skipped (`20*3=60`, `60-9=51` → `(20*3)-9=51`); other steps stay
    single. Values are those of the one-operation solution in the same order."""
    table = nodes(root)
    written: dict[Path, int] = {}
    inner: dict[Path, str] = {}  # a reduced operation not written yet → its `(a op b)` text
    lines = []

    def operand(node: Node, side: str, path: Path) -> str:
        child = node.left if side == "L" else node.right
        if isinstance(child, int):
            return str(child)
        return inner.pop(path + side, None) or str(written[path + side])

    def flush() -> None:
        for path, text in inner.items():
            lines.append(f"{text[1:-1]}={written[path]}")
        inner.clear()

    for path in order:
        node = table[path]
        consumes_pending = any(path + side in inner for side in "LR")
        if not consumes_pending:
            flush()
        left, right = operand(node, "L", path), operand(node, "R", path)
        lv = written[path + "L"] if isinstance(node.left, Node) else node.left
        rv = written[path + "R"] if isinstance(node.right, Node) else node.right
        written[path] = apply(lv, node.op, rv)
        text = f"({left}{node.op}{right})"
        if consumes_pending:
            lines.append(f"{text[1:-1]}={written[path]}")
        else:
            inner[path] = text
    flush()
    return "\n\n".join(lines + [answer_sentence(written[""])])


def top_down_solution_text(root: Node, order: Sequence[Path]) -> str:
    """The solution reducing the operations in `order`, written goal first: its steps in reverse,
    each as `result=left op right` (`58=51+7`, `51=60-9`, `9=5+4`, `60=20*3`), then the answer."""
    steps = solution_text(root, order).split("\n\n")
    lines = [f"{m[4]}={m[1]}{m[2]}{m[3]}" for m in map(_STEP.match, reversed(steps[:-1]))]
    return "\n\n".join(lines + steps[-1:])


def single_step_solution(solution: str) -> str:
    """A reference in any style written as single operations, bottom up: every terse step
    (`(20*3)-9=51`) as its operations in order (`20*3=60`, `60-9=51`), top-down steps (`58=51+7`)
    reversed and written result last (`51+7=58`); one-operation steps and the answer line as they are."""
    paragraphs = solution.split("\n\n")
    top_down = [m for m in map(_TOP_DOWN_STEP.match, paragraphs) if m]
    if top_down:
        rest = [p for p in paragraphs if not _TOP_DOWN_STEP.match(p)]
        return "\n\n".join([f"{m[2]}{m[3]}{m[4]}={m[1]}" for m in reversed(top_down)] + rest)
    out = []
    for paragraph in paragraphs:
        left, _, _ = paragraph.partition("=")
        if "(" not in left or "\\boxed" in paragraph:
            out.append(paragraph)
            continue

        def steps(node: Node | int) -> int:
            if isinstance(node, int):
                return node
            lv, rv = steps(node.left), steps(node.right)
            value = apply(lv, node.op, rv)
            out.append(step_text(lv, node.op, rv, value))
            return value

        steps(parse_expression(left))
    return "\n\n".join(out)


def corrupted_solution(root: Node, order: Sequence[Path], rng: random.Random) -> tuple[str, int]:
    """A student-style wrong solution: one step in `order` goes wrong, the later steps continue
    consistently with the wrong value (correct arithmetic on the values written so far), so the
    answer is wrong. Returns (text, index of the wrong step).

    Two kinds of error, as the student's own rollouts show (docs/toy-world.md): a miscopied operand (state tracking,
    the common one) or an arithmetic slip in the result.
    """
    answer = value_of(root)
    while True:
        wrong = rng.randrange(len(order))
        text, written_answer = _written_solution(root, order, wrong, rng)
        if written_answer != answer and "=-" not in text and check_steps(problem_text(root), text).first_error == wrong:
            return text, wrong


WRITERS = {"steps": solution_text, "terse": terse_solution_text, "top_down": top_down_solution_text}


def toy_problems(n: int, seed: int, cfg: TaskConfig = TaskConfig(), split: str = "train",
                 levels: Sequence[int] | None = None) -> list[Problem]:
    """n problems with equal shares of each level (cycling), deterministic for (seed, split)."""
    rng = random.Random(f"{seed}:{split}")
    chosen = list(levels) if levels is not None else list(cfg.levels)
    problems = []
    for i in range(n):
        level = chosen[i % len(chosen)]
        root = sample_expression(rng, cfg.ops_per_level[level - 1], cfg)
        problems.append(Problem(
            id=f"toy-{split}-{i:06d}",
            problem=problem_text(root),
            solution=WRITERS[cfg.reference_style](root, random_order(root, rng)),
            answer=str(value_of(root)),
            difficulty=level,
            source=SOURCE,
        ))
    return problems


# ---------------------------------------------------------------------------------------------
# Parsing and the step checker (diagnostics only)

_PROBLEM = re.compile(r"^Evaluate (.+)\.$")
_TOKEN = re.compile(r"\d+|[-+*()]")
_STEP = re.compile(r"^(\d+)([-+*])(\d+)=(-?\d+)$")
_TOP_DOWN_STEP = re.compile(r"^(-?\d+)=(\d+)([-+*])(\d+)$")
_BOXED = re.compile(r"\\boxed\{(-?\d+)\}")


def parse_expression(text: str) -> Node:
    """The tree of an expression written by `expression_text`."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != text.replace(" ", ""):
        raise ValueError(f"not a toy expression: {text!r}")
    position = 0

    def operand() -> Node | int:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            node = operation()
            if tokens[position] != ")":
                raise ValueError(f"unbalanced parentheses in {text!r}")
            position += 1
            return node
        return int(token)

    def operation() -> Node:
        nonlocal position
        left = operand()
        op = tokens[position]
        position += 1
        return Node(left, op, operand())

    root = operation()
    if position != len(tokens):
        raise ValueError(f"trailing tokens in {text!r}")
    return root


def parse_problem(text: str) -> Node:
    """The expression tree behind a problem text written by `problem_text`."""
    match = _PROBLEM.match(text.strip())
    if match is None:
        raise ValueError(f"not a toy problem: {text[:80]!r}")
    return parse_expression(match.group(1))


@dataclass(frozen=True)
class StepCheck:
    """Where a completion goes wrong.

    step_spans: (start, end) character offsets of each paragraph before the answer line.
    answer_span: offsets of the last paragraph holding a \\boxed{}, or None.
    order: the path of the operation each right step reduced, up to the first error (one reading
        when identical sub-expressions make it ambiguous).
    first_error: index into step_spans of the first wrong step; len(step_spans) when every step is
        right but the answer line is wrong, missing, or comes before the last operation; None when
        the whole completion is right.
    error_kind: "format" (not `a op b=c`), "wrong_operands" (no operation ready to be reduced
        has these operands: a state-tracking error), "arithmetic", "incomplete", "missing_answer",
        "wrong_answer", or None.
    answer_correct: the boxed answer equals the true value.
    """

    step_spans: tuple[tuple[int, int], ...]
    answer_span: tuple[int, int] | None
    order: tuple[Path, ...]
    first_error: int | None
    error_kind: str | None
    answer_correct: bool


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    for match in re.finditer(r"[^\n]+(?:\n(?!\n)[^\n]*)*", text):
        if match.group().strip():
            start = match.start() + len(match.group()) - len(match.group().lstrip())
            yield start, match.start() + len(match.group().rstrip())


def check_steps(problem: str, completion: str) -> StepCheck:
    """Replay a completion's steps against the problem's tree and find its first wrong step.

    A step is right when it writes `a op b=c` for an operation not reduced yet whose operands are
    both reduced (or numbers), with their true values a and b, and c = a op b. Any order satisfying
    this is accepted; operations with identical operands are interchangeable. After the first error
    nothing more is judged except the answer.
    """
    root = parse_problem(problem)
    table = nodes(root)
    truth = {path: value_of(node) for path, node in table.items()}
    spans = list(_paragraphs(completion))
    answer_span = next((s for s in reversed(spans) if _BOXED.search(completion[s[0]:s[1]])), None)
    steps = [s for s in spans if answer_span is None or s[1] <= answer_span[0]]
    boxed = _BOXED.findall(completion[answer_span[0]:answer_span[1]]) if answer_span else []
    answer_correct = bool(boxed) and int(boxed[-1]) == truth[""]

    # Identical sub-expressions make a step ambiguous ("19-4=15" may reduce either copy), so every
    # reading consistent with the steps so far is kept; a step is wrong when no reading allows it.
    readings: list[tuple[Path, ...]] = [()]
    first_error, kind = None, None

    def operand_value(node: Node, side: str, path: Path, reduced: tuple[Path, ...]) -> int | None:
        child = node.left if side == "L" else node.right
        if isinstance(child, int):
            return child
        return truth[path + side] if path + side in reduced else None

    for i, (start, end) in enumerate(steps):
        match = _STEP.match(completion[start:end])
        if match is None:
            first_error, kind = i, "format"
            break
        left, op, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
        extended = {}
        for reduced in readings:
            for p, n in table.items():
                if p not in reduced and n.op == op and (operand_value(n, "L", p, reduced),
                                                        operand_value(n, "R", p, reduced)) == (left, right):
                    extended.setdefault(frozenset(reduced + (p,)), reduced + (p,))
        if not extended:
            first_error, kind = i, "wrong_operands"
            break
        if result != apply(left, op, right):
            first_error, kind = i, "arithmetic"
            break
        readings = list(extended.values())
    complete = [r for r in readings if "" in r]
    reduced = complete[0] if complete else readings[0]
    if first_error is None:
        if "" not in reduced:
            first_error, kind = len(steps), "incomplete"
        elif answer_span is None:
            first_error, kind = len(steps), "missing_answer"
        elif not answer_correct:
            first_error, kind = len(steps), "wrong_answer"
    return StepCheck(tuple(steps), answer_span, reduced, first_error, kind, answer_correct)


def solution_order(problem: str, solution: str) -> list[Path]:
    """The order in which a correct solution (in either reference style) reduces the operations."""
    check = check_steps(problem, single_step_solution(solution))
    if check.first_error is not None:
        raise ValueError(f"not a correct solution: {check.error_kind} at step {check.first_error}")
    return list(check.order)
