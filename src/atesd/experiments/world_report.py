"""What a toy world is worth as a base model for self-distillation: three tables.

1. Student: Average@k of sampled completions (temperature 1) on a split, per difficulty.
2. Teacher: accuracy of the same model generating from the teacher prompt with the reference
   revealed at ratios α ∈ {0, 0.25, 0.5, 0.75, 1} (ATESD, arXiv 2605.11458, section 3), per
   difficulty. A useful teacher is far better at α = 1 than at α = 0 and rises with α.
3. Headroom: a short supervised control (student prompt → reference solution on the train split)
   and the paired change of the student's Average@k it causes, mean ± standard error over
   problems. A base on which supervision cannot move accuracy by more than 2 standard errors leaves
   no room to judge a distillation method (toy-world lesson).

Nothing here changes the world on disk; the control trains a copy in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from atesd.answers import score_batch
from atesd.data import Problem, load_problems
from atesd.evaluate import EvalReport, paired_difference
from atesd.prompts import PromptConfig, teacher_view
from atesd.rollout import SamplingParams, make_rollout_engine
from atesd.experiments.protocol import TOY_PROTOCOL, EvalProtocol, evaluate_under
from atesd.toy.build import DATA_DIR, WORLD_FILE, ToyWorldConfig, build_toy_world, copy_world, world_splits
from atesd.toy.budget import plan_world
from atesd.toy.warmstart import WarmStartConfig, example_stream, train_supervised

REVEAL_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0)


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

    def to_markdown(self) -> str:
        s = self.student
        levels = list(s.per_difficulty)
        head = "| | all | " + " | ".join(f"d{key}" for key in levels) + " |"
        rule = "|---" * (len(levels) + 2) + "|"
        pct = lambda value: f"{100 * value:.1f}%"  # noqa: E731
        lines = [f"Student, sampled (T = {s.sampling.get('temperature')}), Average@{s.k} on {s.n_problems} problems",
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
            verdict = "more" if h.significant else "NOT more"
            lines += ["", f"Headroom: {h.steps} supervised steps (lr {h.lr:g}) changed the student's Average@{s.k} "
                      f"by {100 * h.change:+.1f} ± {100 * h.standard_error:.1f} points (paired SE), "
                      f"{verdict} than 2 SE."]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"student": self.student.to_dict(), "teacher": [asdict(r) for r in self.teacher],
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


def _world_prompts(world: Path) -> PromptConfig:
    record = world / WORLD_FILE
    if record.is_file():
        return PromptConfig(**json.loads(record.read_text())["config"]["prompts"])
    return PromptConfig()


def toy_world_report(world: str | os.PathLike, protocol: EvalProtocol = TOY_PROTOCOL,
                     reveal_ratios: Sequence[float] = REVEAL_RATIOS, teacher_temperature: float = 0.0,
                     headroom_steps: int = 300, headroom_lr: float = 3e-4, seed: int = 0,
                     threads: int | None = None, progress: bool = True) -> ToyWorldReport:
    """Student, teacher and headroom tables of a built world (see the module docstring).

    world: a directory from build_toy_world (model + data/).
    protocol: the student's evaluation (default: the toy protocol, Average@8 on the 500 test problems,
        sampling seed 1234); the teacher is scored on the same problems and tokens budget.
    teacher_temperature: 0 → one greedy completion per problem and ratio; > 0 → protocol.k samples.
    headroom_steps: steps of the supervised control (0: skip it); headroom_lr its constant rate
        after a 10% linear warm-up.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads is not None:
        torch.set_num_threads(threads)
    world = Path(world)
    prompt_cfg = _world_prompts(world)
    tokenizer = AutoTokenizer.from_pretrained(world)
    model = AutoModelForCausalLM.from_pretrained(world).eval()
    problems = protocol.problems(world / DATA_DIR)

    def student_eval(m) -> EvalReport:
        return evaluate_under(protocol, m, problems, prompt_cfg, tokenizer=tokenizer, progress=progress)

    student = student_eval(model)
    teacher_samples = 1 if teacher_temperature == 0 else protocol.k
    teacher_sampling = SamplingParams(max_new_tokens=protocol.max_new_tokens, temperature=teacher_temperature,
                                      seed=seed)
    rows = []
    for ratio in reveal_ratios:
        per_problem = teacher_accuracy(model, tokenizer, problems, ratio, prompt_cfg, teacher_sampling,
                                       teacher_samples, protocol.batch_size)
        rows.append(TeacherRow(ratio, sum(per_problem) / len(per_problem), _difficulty_means(problems, per_problem)))

    headroom = None
    if headroom_steps > 0:
        control = WarmStartConfig(steps=headroom_steps, lr=headroom_lr, min_lr_ratio=1.0,
                                  warmup_steps=max(1, headroom_steps // 10), teacher_fraction=0.0,
                                  student_max_level=None, student_reorder=False)
        train = load_problems(world_splits(world)["train"])
        examples = example_stream(train, tokenizer, prompt_cfg, control, seed + 1)
        train_supervised(model, tokenizer, examples, control, seed + 1, progress=progress,
                         description="supervised control")
        after = student_eval(model)
        change, se = paired_difference(student.per_problem_accuracy, after.per_problem_accuracy)
        headroom = Headroom(headroom_steps, headroom_lr, student.average_at_k, after.average_at_k, change, se,
                            {k: v.average_at_k for k, v in after.per_difficulty.items()})
    return ToyWorldReport(student, tuple(rows), headroom)


def run_toy_build(preset: str = "toy-1m", out: str | None = None, data: str | None = None, seed: int = 0,
                  report: bool = True, rebuild: bool = False, minutes: float = 15.0) -> Path:
    """`atesd toy build`: build (or reuse: the cache, the shipped default world) a world, copy it to
    `out` if given, print where it is and, with `report`, the student / teacher / headroom tables.
    rebuild: build even when the world is cached or shipped (into the cache; the shipped world
    stays as it is). data: warm-start on this problem file, sized to `minutes` of warm start
    (atesd.toy.budget; the plan is printed before the build starts)."""
    cfg = ToyWorldConfig(preset=preset, data=data, seed=seed)
    if data is not None:
        cfg, plan = plan_world(cfg, minutes)
        print(f"toy world on {data}: {plan.describe(cfg.warm_start.batch_size)}", flush=True)
    world = build_toy_world(cfg, force=rebuild)
    if out is not None:
        world = copy_world(world, out)
    print(f"toy world: {world}")
    print(f"  model: AutoModelForCausalLM.from_pretrained({str(world)!r})")
    for name, path in world_splits(world).items():
        print(f"  {name}: {path}")
    if report:
        print()
        print(toy_world_report(world).to_markdown())
    return world
