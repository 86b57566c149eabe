"""What a toy world is worth as a base model for self-distillation: three tables.

1. Student: Average@k of sampled completions (temperature 1) on a split, per difficulty.
2. Teacher: accuracy of the same model generating from the teacher prompt with the reference
   revealed at ratios α ∈ {0, 0.25, 0.5, 0.75, 1} (ATESD, arXiv 2605.11458, section 3), per
   difficulty. A useful teacher is far better at α = 1 than at α = 0 and rises with α.
3. Headroom: a short supervised control (student prompt → reference solution on the train split)
   and the paired change of the student's Average@k it causes, mean ± standard error over
   problems. A base on which supervision cannot move accuracy by more than 2 standard errors leaves
   no room to judge a distillation method (toy-world lesson).

Whether the three tables make a usable world is `atesd.experiments.world_verdict`'s to say; the
headroom line alone is not that verdict. Worlds on a user's file whose reference solutions are
longer than the toy protocol's 128 new tokens are evaluated with a longer limit
(`world_protocol`): a cut solution has no answer, and such a world would read as one that
solves nothing. Nothing here changes the world on disk; the control trains a copy in memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from atesd.answers import score_batch
from atesd.data import Problem, load_problems
from atesd.evaluate import EvalReport, paired_difference
from atesd.prompts import PromptConfig, teacher_view
from atesd.rollout import SamplingParams, make_rollout_engine
from atesd.experiments.protocol import TOY_PROTOCOL, EvalProtocol, evaluate_under
from atesd.prompts import reference_completion
from atesd.toy.build import DATA_DIR, WORLD_FILE, world_splits
from atesd.toy.warmstart import WarmStartConfig, example_stream, train_supervised

REVEAL_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)
HEADROOM_STEPS, HEADROOM_LR = 300, 3e-4
LONGER_LIMIT_MARGIN = 1.25  # new tokens allowed per token of the longest reference solution


@dataclass(frozen=True)
class TeacherRow:
    """Teacher accuracy at one reveal ratio: overall and per difficulty (key "unknown" if none)."""

    reveal_ratio: float
    accuracy: float
    per_difficulty: dict[str, float]


@dataclass(frozen=True)
class Headroom:
    """Paired change of the student's Average@k after `steps` supervised steps at `lr`."""

    steps: int
    lr: float
    before: float
    after: float
    change: float
    standard_error: float
    after_per_difficulty: dict[str, float]

    @property
    def significant(self) -> bool:
        return self.change > 2 * self.standard_error


@dataclass(frozen=True)
class ToyWorldReport:
    student: EvalReport
    teacher: tuple[TeacherRow, ...]
    headroom: Headroom | None
    protocol: EvalProtocol = TOY_PROTOCOL

    def to_markdown(self) -> str:
        s = self.student
        levels = list(s.per_difficulty)
        head = "| | all | " + " | ".join(f"d{key}" for key in levels) + " |"
        rule = "|---" * (len(levels) + 2) + "|"
        pct = lambda value: f"{100 * value:.1f}%"  # noqa: E731
        lines = [f"Student, sampled (T = {s.sampling.get('temperature')}), Average@{s.k} on {s.n_problems} problems, "
                 f"at most {self.protocol.max_new_tokens} new tokens ({100 * s.truncation_rate:.1f}% cut there)",
                 "", head, rule,
                 "| student | " + pct(s.average_at_k) + " | "
                 + " | ".join(pct(s.per_difficulty[k].average_at_k) for k in levels) + " |"]
        if self.headroom is not None:
            h = self.headroom
            lines.append(f"| after {h.steps} supervised steps | {pct(h.after)} | "
                         + " | ".join(pct(h.after_per_difficulty.get(k, float('nan'))) for k in levels) + " |")
        if self.teacher:
            lines += ["", "Teacher (teacher prompt, reference revealed at ratio α), accuracy", "", head, rule]
            for row in self.teacher:
                lines.append(f"| α = {row.reveal_ratio:g} | {pct(row.accuracy)} | "
                             + " | ".join(pct(row.per_difficulty.get(k, float('nan'))) for k in levels) + " |")
        if self.headroom is not None:
            h = self.headroom
            over = "over" if h.significant else "not over"
            lines += ["", f"Supervised control: {h.steps} supervised steps (lr {h.lr:g}) changed the student's "
                      f"Average@{s.k} by {100 * h.change:+.1f} ± {100 * h.standard_error:.1f} points (paired SE), "
                      f"{over} 2 SE (this alone does not make the world usable: see the verdict)."]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"protocol": self.protocol.to_dict(), "student": self.student.to_dict(),
                "teacher": [asdict(r) for r in self.teacher],
                "headroom": asdict(self.headroom) if self.headroom else None}


def _difficulty_means(problems: Sequence[Problem], per_problem: Sequence[float]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for problem, value in zip(problems, per_problem):
        groups.setdefault("unknown" if problem.difficulty is None else str(problem.difficulty), []).append(value)
    return {key: sum(v) / len(v) for key, v in sorted(groups.items())}


def teacher_accuracy(model, tokenizer, problems: Sequence[Problem], reveal_ratio: float,
                     prompt_cfg: PromptConfig, sampling: SamplingParams, samples: int = 1,
                     batch_size: int = 64) -> list[float]:
    """Per-problem accuracy of the model generating from the teacher prompt p_T^α(·|x, ỹ*_α)."""
    engine = make_rollout_engine("hf", model, tokenizer, batch_size=batch_size)
    prompts = [teacher_view(tokenizer, p, reveal_ratio, prompt_cfg)
               for p in problems for _ in range(samples)]
    rollouts = engine.generate(prompts, sampling)
    golds = [p.answer for p in problems for _ in range(samples)]
    correct = score_batch([r.text for r in rollouts], golds, workers=0)
    return [sum(correct[i * samples:(i + 1) * samples]) / samples for i in range(len(problems))]


def world_prompts(world: Path) -> PromptConfig:
    """The prompt rendering a world was warm-started with (its world.json; the default without one)."""
    record = world / WORLD_FILE
    if record.is_file():
        return PromptConfig(**json.loads(record.read_text())["config"]["prompts"])
    return PromptConfig()


def world_protocol(problems: Sequence[Problem], tokenizer, base: EvalProtocol = TOY_PROTOCOL) -> EvalProtocol:
    """`base`, or, when the longest reference solution of `problems` needs more than base.max_new_tokens
    / LONGER_LIMIT_MARGIN tokens, `base` with max_new_tokens = that length × LONGER_LIMIT_MARGIN
    rounded up to a multiple of 32 (named "<base>-long"). The shipped world's solutions (at most 58
    tokens) keep the toy protocol's 128."""
    longest = max(len(tokenizer(reference_completion(p.solution, tokenizer), add_special_tokens=False)["input_ids"])
                  for p in problems[: base.n_problems])
    if longest * LONGER_LIMIT_MARGIN <= base.max_new_tokens:
        return base
    limit = 32 * math.ceil(longest * LONGER_LIMIT_MARGIN / 32)
    return replace(base, name=f"{base.name}-long", max_new_tokens=limit)


def control_config(steps: int = HEADROOM_STEPS, lr: float = HEADROOM_LR) -> WarmStartConfig:
    """The supervised control: student prompt → reference solution on every level, constant `lr`
    after a 10% linear warm-up."""
    return WarmStartConfig(steps=steps, lr=lr, min_lr_ratio=1.0, warmup_steps=max(1, steps // 10),
                           teacher_fraction=0.0, student_max_level=None, student_reorder=False)


def toy_world_report(world: str | os.PathLike, protocol: EvalProtocol | None = None,
                     reveal_ratios: Sequence[float] = REVEAL_RATIOS, teacher_temperature: float = 0.0,
                     headroom_steps: int = HEADROOM_STEPS, headroom_lr: float = HEADROOM_LR, seed: int = 0,
                     threads: int | None = None, progress: bool = True) -> ToyWorldReport:
    """Student, teacher and headroom tables of a built world (see the module docstring).

    world: a directory from build_toy_world (model + data/).
    protocol: the student's evaluation (default: `world_protocol` of the test split: the toy protocol,
        Average@8 on the first 500 test problems, sampling seed 1234, with a longer new-token limit
        for long solutions); the teacher is scored on the same problems and tokens budget.
    teacher_temperature: 0 → one greedy completion per problem and ratio; > 0 → protocol.k samples.
    headroom_steps: steps of the supervised control (0: skip it); headroom_lr its constant rate
        after a 10% linear warm-up.
    Progress bars name the phases: student, teacher, supervised control, student after control.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads is not None:
        torch.set_num_threads(threads)
    world = Path(world)
    prompt_cfg = world_prompts(world)
    tokenizer = AutoTokenizer.from_pretrained(world)
    model = AutoModelForCausalLM.from_pretrained(world).eval()
    if protocol is None:
        protocol = world_protocol(TOY_PROTOCOL.problems(world / DATA_DIR), tokenizer)
    problems = protocol.problems(world / DATA_DIR)

    def student_eval(m, description: str) -> EvalReport:
        return evaluate_under(protocol, m, problems, prompt_cfg, tokenizer=tokenizer, progress=progress,
                              description=description)

    student = student_eval(model, "student")
    teacher_samples = 1 if teacher_temperature == 0 else protocol.k
    teacher_sampling = SamplingParams(max_new_tokens=protocol.max_new_tokens, temperature=teacher_temperature,
                                      seed=seed)
    rows = []
    for ratio in tqdm(reveal_ratios, desc="teacher, α = 0 … 1", unit="ratio", disable=not progress,
                      dynamic_ncols=True):
        per_problem = teacher_accuracy(model, tokenizer, problems, ratio, prompt_cfg, teacher_sampling,
                                       teacher_samples, protocol.batch_size)
        rows.append(TeacherRow(ratio, sum(per_problem) / len(per_problem), _difficulty_means(problems, per_problem)))

    headroom = None
    if headroom_steps > 0:
        control = control_config(headroom_steps, headroom_lr)
        train = load_problems(world_splits(world)["train"])
        examples = example_stream(train, tokenizer, prompt_cfg, control, seed + 1)
        train_supervised(model, tokenizer, examples, control, seed + 1, progress=progress,
                         description="supervised control")
        after = student_eval(model, "student after control")
        change, se = paired_difference(student.per_problem_accuracy, after.per_problem_accuracy)
        headroom = Headroom(headroom_steps, headroom_lr, student.average_at_k, after.average_at_k, change, se,
                            {k: v.average_at_k for k, v in after.per_difficulty.items()})
    return ToyWorldReport(student, tuple(rows), headroom, protocol)
