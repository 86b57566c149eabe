"""`atesd toy build`: plan, build, report and judge a toy world, saying first how long it will take.

1. Find the world: the shipped default or the cache, by its configuration's key; a world on the
   user's file also by the request that sized it (the file's bytes, preset, seed, max level,
   minutes, report or not), so a second identical command reuses it without measuring again.
2. Otherwise measure this machine (`atesd.toy.speed`) on the real splits, the tokenizer trained on
   them and a model of the preset: a warm-start step, a supervised-control step, the decoder and
   the scorer. With `--data` the warm start gets the seconds the budget leaves after the measured
   planning, the preparation the build repeats (splits, tokenizer) and the report
   (`atesd.toy.budget`). For a world that exists, only the report is measured.
3. Print the plan before any work: each phase (named as its progress bar is), its count and unit
   time measured here, its minutes, and the whole command's.
4. Build (progress bar "warm start"), then the report ("student", "teacher, α = 0 … 1",
   "supervised control", "student after control"), then the verdict line
   (`atesd.experiments.world_verdict`) and, when the world is NOT usable, what to change with the
   time each change would take. Last, the wall time against the plan. With `out`, the report, the
   verdict and both times are written to `<out>/report.json`.

The CLI exits with WORLD_NOT_USABLE (3) when the verdict says NOT usable; 0 when usable or when no
report was asked (no report, no verdict); 2 on bad input.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from atesd import atomic
from atesd.data import load_problems
from atesd.experiments.protocol import TOY_PROTOCOL
from atesd.experiments.world_report import (HEADROOM_STEPS, REVEAL_RATIOS, control_config, toy_world_report,
                                            world_prompts, world_protocol)
from atesd.experiments.world_verdict import STUDENT_CEILING, STUDENT_FLOOR, WorldVerdict, world_verdict
from atesd.prompts import reference_completion, student_prompt, teacher_view
from atesd.toy.budget import MAX_STEPS, RELATIVE_STEP_COST, data_tokenizer, sized, warm_start_steps
from atesd.toy.build import (BUILD_VERSION, WORLD_FILE, ToyWorldConfig, build_toy_world, cache_root,
                             cached_world, copy_world, file_splits, shipped_world, toy_splits, world_splits)
from atesd.toy.model import build_model, tokenizer_corpus, train_tokenizer
from atesd.toy.speed import measure_decoding, scoring_seconds, supervised_step_seconds
from atesd.toy.warmstart import example_stream

WORLD_NOT_USABLE = 3
REPORT_FILE = "report.json"
LARGER_PRESET = {"toy-test": "toy-1m", "toy-1m": "toy-5m"}


@dataclass(frozen=True)
class Phase:
    """One phase of the command: its name (as its progress bar shows it), estimated seconds, and how."""

    name: str
    seconds: float
    detail: str


@dataclass(frozen=True)
class CommandPlan:
    """The phases still to run, the seconds already spent measuring, and a warm-start step's seconds."""

    phases: tuple[Phase, ...]
    spent: float
    warm_start_step: float | None = None

    @property
    def total(self) -> float:
        return self.spent + sum(phase.seconds for phase in self.phases)

    def describe(self) -> str:
        lines = [f"plan (unit times measured on this machine just now, in {self.spent:.0f} s):"]
        lines += [f"  {p.name:<22} {p.detail:<58} {p.seconds / 60:6.1f} min" for p in self.phases]
        lines.append(f"  whole command: about {self.total / 60:.1f} min")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"phases": [asdict(p) for p in self.phases], "spent_seconds": round(self.spent, 1),
                "total_seconds": round(self.total, 1), "warm_start_step_seconds": self.warm_start_step}


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def report_phases(model, tokenizer, prompt_cfg, train, test) -> list[Phase]:
    """The report's phases (`toy_world_report` with its defaults) timed on `model` and these splits."""
    protocol = world_protocol(test[: TOY_PROTOCOL.n_problems], tokenizer)
    problems, k, batch = test[: protocol.n_problems], protocol.k, protocol.batch_size
    control = control_config()
    control_step = supervised_step_seconds(model, tokenizer, example_stream(train, tokenizer, prompt_cfg, control, 1),
                                           control, 1)
    student_prompts = [len(student_prompt(tokenizer, p.problem, prompt_cfg)) for p in problems]
    teacher_prompts = {r: [len(teacher_view(tokenizer, p, r, prompt_cfg)) for p in problems] for r in REVEAL_RATIOS}
    decode = measure_decoding(model, tokenizer, [student_prompt(tokenizer, p.problem, prompt_cfg) for p in problems],
                              [teacher_view(tokenizer, p, 1.0, prompt_cfg) for p in problems], batch)
    score = scoring_seconds(problems, tokenizer)
    lengths = [_token_count(tokenizer, reference_completion(p.solution, tokenizer)) for p in problems]
    student = (decode.generation_seconds([n for n in student_prompts for _ in range(k)],
                                         [n for n in lengths for _ in range(k)], batch, protocol.max_new_tokens)
               + score * k * len(problems))
    teacher = sum(decode.generation_seconds(teacher_prompts[r], lengths, batch, protocol.max_new_tokens)
                  for r in REVEAL_RATIOS) + score * len(REVEAL_RATIOS) * len(problems)
    limit = protocol.max_new_tokens
    return [Phase("student", student, f"{len(problems)} problems × {k} samples, ≤ {limit} new tokens"),
            Phase("teacher, α = 0 … 1", teacher, f"{len(problems)} problems × {len(REVEAL_RATIOS)} ratios, greedy"),
            Phase("supervised control", HEADROOM_STEPS * control_step,
                  f"{HEADROOM_STEPS} steps of {control.batch_size} × {control_step:.2f} s"),
            Phase("student after control", student, "as student")]


def plan_build(cfg: ToyWorldConfig, minutes: float | None, report: bool,
               started: float) -> tuple[ToyWorldConfig, CommandPlan]:
    """(cfg, its plan): with `cfg.data`, vocabulary and warm-start steps sized so that the whole command
    takes `minutes` from `started` (time.monotonic()); for the toy task, the plan of cfg as it is."""
    began = time.monotonic()
    splits = file_splits(cfg) if cfg.data is not None else toy_splits(cfg)
    if cfg.data is not None:
        tokenizer, vocab, _ = data_tokenizer(cfg, splits["train"])
    else:
        vocab = cfg.vocab_size
        tokenizer = train_tokenizer(tokenizer_corpus(splits["train"], cfg.prompts), vocab)
    prepare = Phase("prepare", time.monotonic() - began, "splits and tokenizer again (as long as the plan's took)")
    model = build_model(cfg.preset, tokenizer, seed=cfg.seed)
    warm_step = supervised_step_seconds(model, tokenizer, example_stream(splits["train"], tokenizer, cfg.prompts,
                                                                         cfg.warm_start, cfg.seed),
                                        cfg.warm_start, cfg.seed, threads=cfg.threads)
    after = report_phases(model, tokenizer, cfg.prompts, splits["train"], splits["test"]) if report else []
    spent = time.monotonic() - started
    steps = cfg.warm_start.steps
    if minutes is not None:
        left = minutes * 60 - spent - prepare.seconds - sum(p.seconds for p in after)
        steps = warm_start_steps(left, warm_step)
        cfg = sized(cfg, vocab, steps)
        if left < steps * warm_step:
            print(f"note: {minutes:g} min cannot hold the report and {steps} warm-start steps on this machine; "
                  "the plan below takes longer", flush=True)
    warm = Phase("warm start", steps * warm_step, f"{steps} steps of {cfg.warm_start.batch_size} × {warm_step:.2f} s")
    return cfg, CommandPlan((prepare, warm, *after), spent, warm_step)


def plan_report(world: Path, started: float) -> CommandPlan:
    """The plan of the report on an existing world, timed on its own model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world)
    model = AutoModelForCausalLM.from_pretrained(world).eval()
    splits = {name: load_problems(path) for name, path in world_splits(world).items()}
    phases = report_phases(model, tokenizer, world_prompts(world), splits["train"], splits["test"])
    return CommandPlan(tuple(phases), time.monotonic() - started)


def request_key(cfg: ToyWorldConfig, minutes: float, report: bool) -> str:
    """What a `--data` command asked for: the file's bytes, the options, the budget and the build version."""
    content = {"data": hashlib.sha256(Path(cfg.data).read_bytes()).hexdigest(), "preset": cfg.preset,
               "seed": cfg.seed, "max_level": cfg.max_level, "threads": cfg.threads, "minutes": minutes,
               "report": report, "version": BUILD_VERSION}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _existing_world(cfg: ToyWorldConfig, request: str | None) -> Path | None:
    if request is not None:
        return cached_world("request", request)
    key = cfg.cache_key()
    marker = cache_root() / key / WORLD_FILE
    cached = marker.parent if marker.is_file() and json.loads(marker.read_text()).get("key") == key else None
    return shipped_world(key) or cached


def suggestions(cfg: ToyWorldConfig, verdict: WorldVerdict, plan: CommandPlan, minutes: float) -> list[str]:
    """What to change when the world is NOT usable, each with the whole command's estimated minutes."""
    if cfg.data is None:
        return ["the shipped world: atesd toy build --preset toy-1m (returns at once; usable, docs/toy-world.md)"]
    base = (f"atesd toy build --data {cfg.data}" + ("" if cfg.threads == 2 else f" --threads {cfg.threads}")
            + ("" if cfg.preset == "toy-1m" else f" --preset {cfg.preset}"))
    levels = "" if cfg.max_level is None else f" --max-level {cfg.max_level}"
    steps, lines = cfg.warm_start.steps, []
    if steps < MAX_STEPS and plan.warm_start_step:
        more = min(MAX_STEPS, 2 * steps)
        longer = math.ceil((plan.total + (more - steps) * plan.warm_start_step) / 60)
        lines.append(f"more minutes: {base}{levels} --minutes {longer} (about {longer} min: {more} warm-start steps "
                     f"instead of {steps})")
    if cfg.preset in LARGER_PRESET:
        larger = LARGER_PRESET[cfg.preset]
        ratio = RELATIVE_STEP_COST[larger] / RELATIVE_STEP_COST[cfg.preset]
        total = math.ceil(ratio * (plan.total - plan.spent) / 60 + plan.spent / 60)
        lines.append(f"a larger preset: {base.replace(f' --preset {cfg.preset}', '')} --preset {larger}{levels} "
                     f"--minutes {total} (about {total} min: the same {steps} steps at ~{ratio:.1f}× the seconds "
                     "each, from throughputs measured on an idle 2-core machine)")
    numbered = sorted(int(level) for level in verdict.levels if level.isdigit())
    solved = [int(level) for level in verdict.levels if level.isdigit() and level not in verdict.levels_at_zero]
    easier = max(solved, default=numbered[0] if numbered else None)
    if easier is not None and easier < numbered[-1]:
        why = (f"the student solves under {100 * STUDENT_FLOOR:.0f}% above level {easier}" if solved else
               f"the student solves under {100 * STUDENT_FLOOR:.0f}% on every level; level {easier} is the "
               "smallest task")
        lines.append(f"easier levels only: {base} --max-level {easier} --minutes {minutes:g} (about {minutes:g} min; "
                     f"{why})")
    if 2 * len(verdict.levels_at_ceiling) > len(verdict.levels):
        lines.append(f"harder problems: the student is above {100 * STUDENT_CEILING:.0f}% on most levels")
    return lines


def run_toy_build(preset: str = "toy-1m", out: str | None = None, data: str | None = None, seed: int = 0,
                  report: bool = True, rebuild: bool = False, minutes: float = 15.0, max_level: int | None = None,
                  threads: int = 2, progress: bool = True) -> tuple[Path, WorldVerdict | None]:
    """`atesd toy build` (see the module docstring): (the world's directory, the verdict or None
    without a report). rebuild: build even when the world is cached or shipped (into the cache; the
    shipped world stays as it is). data: warm-start on this problem file (max_level: its levels up to
    this one), the whole command sized to `minutes` on this machine."""
    started = time.monotonic()
    cfg = ToyWorldConfig(preset=preset, data=data, seed=seed, max_level=max_level, threads=threads)
    request = request_key(cfg, minutes, report) if data is not None else None
    world = None if rebuild else _existing_world(cfg, request)
    if world is None:
        cfg, plan = plan_build(cfg, minutes if data is not None else None, report, started)
        print(f"toy world {'on ' + data if data else cfg.preset}: building (vocabulary ≤ {cfg.vocab_size}, "
              f"{cfg.warm_start.steps} warm-start steps)", flush=True)
    else:
        print(f"toy world: {world} exists (shipped or cached); measuring its report's phases", flush=True)
        plan = plan_report(world, started) if report else CommandPlan((), time.monotonic() - started)
    print(plan.describe(), flush=True)
    if world is None:
        world = build_toy_world(cfg, force=rebuild, progress=progress,
                                facts={"request": request, "plan": plan.to_dict()})
    if out is not None:
        world = copy_world(world, out)
    print(f"toy world: {world}")
    print(f"  model: AutoModelForCausalLM.from_pretrained({str(world)!r})")
    for name, path in world_splits(world).items():
        print(f"  {name}: {path}")
    if not report:
        return world, None
    print()
    tables = toy_world_report(world, progress=progress)
    verdict = world_verdict(tables)
    print(tables.to_markdown())
    print(verdict.line())
    if not verdict.usable:
        print("What to change (estimated time of the whole command on this machine):")
        for line in suggestions(cfg, verdict, plan, minutes):
            print(f"  - {line}")
    elapsed = time.monotonic() - started
    print(f"took {elapsed / 60:.1f} min; the plan said {plan.total / 60:.1f} min "
          f"(wall / plan = {elapsed / plan.total:.2f})")
    if out is not None:
        atomic.write_json(Path(world) / REPORT_FILE,
                          {**tables.to_dict(), "world_key": json.loads((Path(world) / WORLD_FILE).read_text())["key"],
                           "verdict": {"usable": verdict.usable, "line": verdict.line()}, "plan": plan.to_dict(),
                           "wall_seconds": round(elapsed, 1)})
    return world, verdict
