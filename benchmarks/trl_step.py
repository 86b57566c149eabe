"""One full OPSD training step of atesd against TRL's experimental `SDFTTrainer`, side by side.

Both train the same random-weight toy Qwen3 on the same toy problems in one process, with runs
interleaved (atesd, TRL, atesd, TRL, ...) so that load from other users of the machine hits both
alike. A step is: rollouts from the student prompt (B prompts × 1 rollout, up to L new tokens,
temperature 1, top-p 1, top-k 0, plain `transformers` generation in both), a frozen teacher's
forward pass on the teacher prompt (the problem plus the full reference, `reveal(solution, 1.0)`),
the student's forward pass, full-vocabulary forward KL(p_T ‖ p_S), backward and AdamW.

- atesd: `atesd.train.train` (`exposure.policy=fixed`, `reveal_ratio=1.0`, `loss.divergence=
  forward_kl`, `teacher.kind=frozen`); step time is `timing/step_s` from metrics.jsonl, with its
  `timing/sample_s` and `timing/loss_s` parts.
- TRL: `SDFTTrainer` with `distillation_mode="full_logits"`, `distillation_alpha=0.0` (its
  `kl_div(student, teacher)`, i.e. KL(p_T ‖ p_S)), `distillation_is_clip=None`,
  `teacher_model_kind="base"` (a frozen copy), `num_generations=1`; the privileged context is the
  same revealed reference. Step time is the wall time between `on_step_begin` and `on_step_end`
  of a `TrainerCallback`. TRL's own defaults `bf16=True` (autocast) and `gradient_checkpointing=True`
  are switched off so that both train in fp32 without recomputation; its parts come from timing
  wrappers around the trainer's own methods (generation, teacher and student forward, divergence,
  backward; the rest is the optimizer step and the Trainer's bookkeeping).

Differences the benchmark cannot remove (both stop at EOS; the table shows mean completion lengths):
1. atesd also scores each rollout's answer (math-verify, in-process) inside its step; TRL does not.
2. The teacher prompts are worded alike but not identically (TRL composes `{prompt}` + template);
   on the toy problems they are equally long (mean 134 tokens atesd, 135 TRL; student prompt 48).

TRL is a benchmark-only dependency: install it in a separate environment, e.g.
    python3 -m venv .venv-trl && .venv-trl/bin/pip install torch==2.13.0 trl==1.16.0 -e .
    .venv-trl/bin/python benchmarks/trl_step.py           # toy-1m: 4 × 32 and 8 × 128 tokens
    .venv-trl/bin/python benchmarks/trl_step.py --quick   # tiny sizes, CI smoke
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import command_line, machine, machine_line, progress, table, write_json, write_results  # noqa: E402
from bench_world import build_bench_world  # noqa: E402

# (preset, prompts per step B, max new tokens L): the sizes of the peers' figures
FULL = {"cases": [("toy-1m", 4, 32), ("toy-1m", 8, 128)], "steps": 12, "skip": 2, "repeats": 3}
QUICK = {"cases": [("toy-test", 2, 8)], "steps": 3, "skip": 1, "repeats": 1}
GOAL_SPEEDUP = 1.5
LEARNING_RATE = 1e-5
MAX_GRAD_NORM = 1.0
TRL_TEACHER_TEMPLATE = (  # TRL's `{prompt}` is the student's user turn; the rest mirrors atesd's wording
    "{prompt}\n\nHere is a reference solution:\n=== Reference Solution Begin ===\n{privileged_context}\n"
    "=== Reference Solution End ===\n\nStudy the reference, then solve the problem in your own reasoning; "
    "do not copy it."
)


def trl_available() -> bool:
    try:
        import trl.experimental.sdft  # noqa: F401
    except ImportError:
        return False
    return True


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_atesd(case: tuple, steps: int, model_dir: Path, train_file: Path, out_dir: Path) -> list[dict]:
    """One atesd OPSD run; returns its metrics.jsonl records."""
    from atesd.config import load_config
    from atesd.train import train

    _, batch, length = case
    overrides = [
        f"model.name_or_path={model_dir}", f"data.train={train_file}", "data.val=null",
        f"steps={steps}", f"prompts_per_step={batch}", "rollout.num_generations=1",
        f"rollout.max_new_tokens={length}", "rollout.temperature=1.0", "rollout.top_p=1.0", "rollout.top_k=0",
        "exposure.policy=fixed", "exposure.reveal_ratio=1.0", "loss.objective=distill",
        "loss.divergence=forward_kl", "teacher.kind=frozen", f"optim.lr={LEARNING_RATE}",
        f"optim.max_grad_norm={MAX_GRAD_NORM}", f"save_every={steps + 1}", "progress=false",
        f"output_dir={out_dir}",
    ]
    train(load_config(None, overrides))
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def trl_dataset(train_file: Path):
    """The toy problems as SDFT rows: the student's user turn and the revealed reference."""
    from datasets import Dataset

    from atesd.data import load_problems
    from atesd.prompts import PromptConfig
    from atesd.reveal import reveal

    template = PromptConfig().student_template
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": template.format(problem=p.problem)}],
         "privileged_context": reveal(p.solution, 1.0)}
        for p in load_problems(str(train_file))
    ])


class _PartTimer:
    """Accumulates wall time of wrapped trainer methods per step (instrumentation, not TRL code)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.tokens = 0

    def wrap(self, name_of, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            name = name_of(out)
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - t0
            return out
        return timed


def run_trl(case: tuple, steps: int, model_dir: Path, train_file: Path, out_dir: Path, threads: int,
            profile: bool = False) -> tuple[list[dict], str | None]:
    """One TRL SDFTTrainer run; returns per-step records (and a cProfile summary when asked)."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    _, batch, length = case
    parts = _PartTimer()
    records: list[dict] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            parts.current, parts.tokens = {}, 0
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s = time.perf_counter() - self.t0
            times = {f"{k}_s": v for k, v in parts.current.items()}
            records.append({"step_s": step_s, "tokens": parts.tokens, **times})

    args = SDFTConfig(
        output_dir=str(out_dir), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=1, max_completion_length=length, max_prompt_length=None,
        temperature=1.0, top_p=1.0, top_k=0, chat_template_kwargs={"enable_thinking": False},
        distillation_mode="full_logits", distillation_alpha=0.0, distillation_is_clip=None,
        teacher_model_kind="base", teacher_prompt_template=TRL_TEACHER_TEMPLATE,
        max_steps=steps, learning_rate=LEARNING_RATE, max_grad_norm=MAX_GRAD_NORM, lr_scheduler_type="constant",
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
        bf16=False, gradient_checkpointing=False,  # TRL's defaults (bf16 autocast, checkpointing) vs atesd's fp32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left", truncation_side="left")
    trainer = SDFTTrainer(model=str(model_dir), args=args, train_dataset=trl_dataset(train_file),
                          processing_class=tokenizer, callbacks=[StepTimes()])
    torch.set_num_threads(threads)
    if trainer.model.dtype != torch.float32:
        raise RuntimeError(f"TRL loaded the model as {trainer.model.dtype}, not float32")

    generate = trainer._generate

    def generate_counted(prompt_ids):
        out = generate(prompt_ids)
        parts.tokens += sum(len(c) for c in out[1])
        return out

    trainer._generate = parts.wrap(lambda _: "generate", generate_counted)
    trainer._forward_logits = parts.wrap(
        lambda out: "student_forward" if out.requires_grad else "teacher_forward", trainer._forward_logits)
    trainer._compute_self_distillation_loss = parts.wrap(
        lambda _: "divergence", trainer._compute_self_distillation_loss)
    trainer.accelerator.backward = parts.wrap(lambda _: "backward", trainer.accelerator.backward)
    summary = None
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
    trainer.train()
    if profile:
        profiler.disable()
        summary = _profile_summary(profiler)
    return records, summary


def _profile_summary(profiler: cProfile.Profile, top: int = 15) -> str:
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


def profile_atesd(case, model_dir, train_file, out_dir) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_atesd(case, 3, model_dir, train_file, out_dir)
    profiler.disable()
    return _profile_summary(profiler)


def summarise(case: tuple, atesd_runs: list[list[dict]], trl_runs: list[list[dict]], skip: int) -> dict:
    atesd = [r for run in atesd_runs for r in run[skip:]]
    trl = [r for run in trl_runs for r in run[skip:]]
    a_step = _median([r["timing/step_s"] for r in atesd])
    t_step = _median([r["step_s"] for r in trl])
    a_roll, a_loss = _median([r["timing/sample_s"] for r in atesd]), _median([r["timing/loss_s"] for r in atesd])
    t_parts = {k: _median([r.get(f"{k}_s", 0.0) for r in trl]) for k in
               ("generate", "teacher_forward", "student_forward", "divergence", "backward")}
    return {
        "preset": case[0], "prompts": case[1], "max_new_tokens": case[2],
        "atesd": {
            "median_step_s": a_step, "steps_per_s": 1 / a_step,
            "median_step_s_per_run": [_median([r["timing/step_s"] for r in run[skip:]]) for run in atesd_runs],
            "median_rollout_s": a_roll, "median_loss_s": a_loss,
            "median_update_and_rest_s": _median([r["timing/step_s"] - r["timing/sample_s"] - r["timing/loss_s"]
                                                 for r in atesd]),
            "median_tokens_per_s": _median([r["train/tokens_per_s"] for r in atesd]),
            "mean_completion_length": statistics.fmean(r["rollout/completion_length"] for r in atesd),
            "steps_timed": len(atesd),
        },
        "trl": {
            "median_step_s": t_step, "steps_per_s": 1 / t_step,
            "median_step_s_per_run": [_median([r["step_s"] for r in run[skip:]]) for run in trl_runs],
            **{f"median_{k}_s": v for k, v in t_parts.items()},
            "median_optimizer_and_rest_s": _median([r["step_s"] - sum(r.get(f"{k}_s", 0.0) for k in t_parts)
                                                   for r in trl]),
            "median_tokens_per_s": _median([r["tokens"] / r["step_s"] for r in trl]),
            "mean_completion_length": statistics.fmean(r["tokens"] / case[1] for r in trl),
            "steps_timed": len(trl),
        },
        "speedup_atesd_over_trl": t_step / a_step,
    }


def run(sizes: dict, threads: int, work_dir: Path, profile: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    cases, profiles = [], {}
    for preset, batch, length in sizes["cases"]:
        case = (preset, batch, length)
        progress(f"trl_step: building a {preset} world (random weights)")
        model_dir, train_file = build_bench_world(work_dir / preset, preset)
        atesd_runs, trl_runs = [], []
        for repeat in range(sizes["repeats"]):
            tag = f"{preset}-{batch}x{length}-{repeat}"
            progress(f"trl_step: {batch} × {length}: atesd run {repeat + 1}/{sizes['repeats']}")
            atesd_runs.append(run_atesd(case, sizes["steps"], model_dir, train_file, work_dir / f"atesd-{tag}"))
            torch.set_num_threads(threads)
            progress(f"trl_step: {batch} × {length}: TRL run {repeat + 1}/{sizes['repeats']}")
            trl_runs.append(run_trl(case, sizes["steps"], model_dir, train_file, work_dir / f"trl-{tag}", threads)[0])
            torch.set_num_threads(threads)
        cases.append(summarise(case, atesd_runs, trl_runs, sizes["skip"]))
        c = cases[-1]
        progress(f"  atesd {c['atesd']['median_step_s']:.3f} s/step, TRL {c['trl']['median_step_s']:.3f} s/step, "
                 f"speedup {c['speedup_atesd_over_trl']:.2f}×")
        if profile and case == tuple(sizes["cases"][-1]):
            progress("trl_step: cProfile of 3 steps each (not timed)")
            profiles["atesd"] = profile_atesd(case, model_dir, train_file, work_dir / "atesd-profile")
            torch.set_num_threads(threads)
            profiles["trl"] = run_trl(case, 3, model_dir, train_file, work_dir / "trl-profile", threads, True)[1]
            profiles["case"] = f"{preset} {batch} × {length}"
    worst = min(c["speedup_atesd_over_trl"] for c in cases)
    return {"benchmark": "trl_step", "sizes": sizes, "threads": threads, "cases": cases, "profiles": profiles,
            "goal_speedup": GOAL_SPEEDUP, "min_speedup": worst, "goal_met": worst >= GOAL_SPEEDUP}


def to_markdown(result: dict) -> str:
    s = result["sizes"]
    speed_rows, part_rows = [], []
    for c in result["cases"]:
        name = f"{c['preset']}, {c['prompts']} × {c['max_new_tokens']}"
        a, t = c["atesd"], c["trl"]
        speed_rows += [
            [name, "atesd", a["median_step_s"], a["steps_per_s"],
             " / ".join(f"{x:.3f}" for x in a["median_step_s_per_run"]),
             round(a["median_tokens_per_s"]), a["mean_completion_length"], a["steps_timed"], ""],
            [name, "TRL SDFTTrainer", t["median_step_s"], t["steps_per_s"],
             " / ".join(f"{x:.3f}" for x in t["median_step_s_per_run"]), round(t["median_tokens_per_s"]),
             t["mean_completion_length"], t["steps_timed"], f"**{c['speedup_atesd_over_trl']:.2f}×**"],
        ]
        part_rows += [
            [name, "atesd", a["median_rollout_s"], "—", "—", "—", a["median_loss_s"],
             a["median_update_and_rest_s"]],
            [name, "TRL", t["median_generate_s"], t["median_teacher_forward_s"], t["median_student_forward_s"],
             t["median_divergence_s"], t["median_backward_s"], t["median_optimizer_and_rest_s"]],
        ]
    gap_rows = []
    for c in result["cases"]:
        a, t = c["atesd"], c["trl"]
        trl_loss = sum(t[f"median_{k}_s"] for k in ("teacher_forward", "student_forward", "divergence", "backward"))
        gap_rows.append([f"{c['preset']}, {c['prompts']} × {c['max_new_tokens']}",
                         t["median_generate_s"] - a["median_rollout_s"], trl_loss - a["median_loss_s"],
                         t["median_optimizer_and_rest_s"] - a["median_update_and_rest_s"],
                         t["median_step_s"] - a["median_step_s"],
                         t["mean_completion_length"] - a["mean_completion_length"]])
    parts = [
        "### One OPSD training step: atesd vs TRL 1.16 `SDFTTrainer` (toy model, CPU)",
        "",
        f"Random-weight toy Qwen3, B prompts × 1 rollout of up to L new tokens (temperature 1, top-p 1, top-k 0, "
        f"`transformers` generation in both, stopping at EOS), frozen teacher with the full reference, "
        f"full-vocabulary forward KL, AdamW; {s['steps']} steps per run, first {s['skip']} skipped, "
        f"{s['repeats']} interleaved runs per trainer, {result['threads']} torch thread(s). "
        "Medians over all timed steps.",
        "",
        table(["case", "trainer", "step s", "steps/s", "per-run medians", "tokens/s", "mean completion tokens",
               "steps", "atesd speedup"], speed_rows),
        "",
        "Where a step's time goes (median seconds). atesd: rollout includes answer scoring; the loss column is "
        "teacher + student forward, divergence and backward; the last column is clip + AdamW + metrics. TRL: "
        "parts timed around its own methods; the last column is the optimizer step and the Trainer's bookkeeping.",
        "",
        table(["case", "trainer", "generate / rollout", "teacher fwd", "student fwd", "divergence",
               "backward (atesd: whole loss)", "optimizer + rest"], part_rows),
        "",
        "Where the difference comes from: TRL minus atesd, median seconds per step by phase (positive: atesd "
        "faster), and TRL minus atesd mean completion tokens (rollouts stop at EOS: atesd stops on EOS and pad).",
        "",
        table(["case", "rollout", "teacher + student + divergence + backward", "optimizer + rest", "whole step",
               "completion tokens"], gap_rows),
        "",
        f"Slowest-case speedup atesd / TRL (steps/s): **{result['min_speedup']:.2f}×** "
        f"(goal ≥ {result['goal_speedup']:.1f}×: "
        f"**{'met' if result['goal_met'] else 'not met'}**).",
    ]
    if result["profiles"]:
        p = result["profiles"]
        parts += ["", f"cProfile, top functions by own time over 3 steps ({p['case']}; includes start-up):", "",
                  "atesd:", "", "```", p["atesd"], "```", "", "TRL:", "", "```", p["trl"], "```"]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke, < 60 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both trainers")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown")
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="also write the result dict here")
    args = parser.parse_args(argv)
    if not trl_available():
        sys.exit("trl_step: TRL is not installed (benchmark-only dependency); see this script's docstring")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("steps", "repeats"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    with tempfile.TemporaryDirectory(prefix="atesd-trl-step-") as tmp:
        result = run(sizes, args.threads, Path(args.work_dir or tmp), profile=not args.no_profile and not args.quick)
    result["machine"], result["command"] = machine(), command_line()
    import trl

    result["trl_version"] = trl.__version__
    result["markdown"] = to_markdown(result)
    footer = (f"\n\nCommand: `{result['command']}` (TRL {result['trl_version']})  \n"
              f"Machine: {machine_line(result['machine'])}")
    print(result["markdown"] + footer)
    if not args.json:
        write_results("trl_step-quick" if args.quick else "trl_step", result["markdown"] + footer, result)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
