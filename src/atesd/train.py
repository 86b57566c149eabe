"""The one training loop: OPSD, fixed/random/scheduled exposure, ATESD, SFT and GRPO.

Per optimizer step t (ATESD, arXiv 2605.11458, Algorithm 1; OPSD, arXiv 2601.18734):

  1. decide   α_t from the exposure policy (rank 0 decides, every rank uses the same value)
  2. rollout  ŷ ~ p_S(·|x) for this process's prompts (one generation call for all micro-batches)
  3. views    student = student prompt + ŷ; teacher = teacher prompt with ỹ*_α + the same ŷ
  4. loss     the objective's per-token loss on completion positions, micro-batch by micro-batch
  5. update   clip gradients, optimizer and scheduler step; EMA teacher; sync the rollout engine
  6. observe  training signals → exposure policy (reward, controller update)
  7. log/save metrics.jsonl, exposure.jsonl, atomic checkpoints

Cross-cutting concerns (timing, logging, checkpoints) are one line each here; the method-specific
parts live in `objectives`, `teacher`, `exposure`, `rollout`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from atesd.answers import score_batch
from atesd.checkpoint import RunDir
from atesd.config import TrainConfig, save_config
from atesd.data import load_problems
from atesd.exposure import make_exposure_policy
from atesd.objectives import StepViews, make_objective
from atesd.optim import make_optimizer, make_scheduler
from atesd.models import is_lora, load_model, load_tokenizer, output_head
from atesd.prompts import reference_completion, student_prompt, teacher_prompt
from atesd.reveal import reveal
from atesd.rollout import make_rollout_engine
from atesd.rollout.base import SamplingParams
from atesd.signals import ExposureProbe, exposure_signals, step_metrics
from atesd.teacher import Teacher, build_sequences
from atesd.toy.paths import resolve_toy_paths
from atesd.validation import Validator


@dataclass
class TrainResult:
    """What `train` returns: the run directory, the trained (unwrapped) model on this process and
    the reveal ratio this process used at each step (tests compare them across ranks)."""

    output_dir: Path
    model: torch.nn.Module
    reveal_ratios: list[float]
    process_index: int = 0
    num_processes: int = 1


class PromptSampler:
    """Which problems step t uses: a seeded permutation per epoch, a pure function of (seed, t),
    so a resumed run sees exactly the prompts an uninterrupted one would."""

    def __init__(self, n_problems: int, global_batch: int, seed: int):
        self.n, self.global_batch, self.seed = n_problems, global_batch, seed

    def indices(self, step: int, rank: int, world: int) -> list[int]:
        out = []
        for pos in range(step * self.global_batch, (step + 1) * self.global_batch):
            epoch, offset = divmod(pos, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            out.append(int(perm[offset]))
        return out[rank::world]


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank * 7) % (2**31 - 1)


def _engine_options(cfg: TrainConfig) -> dict:
    if cfg.rollout.backend == "vllm":
        r = cfg.rollout
        return {"gpu_memory_utilization": r.vllm_gpu_memory_utilization, "enforce_eager": r.vllm_enforce_eager,
                "enable_sleep_mode": r.vllm_sleep_mode, "seed": cfg.seed, "dtype": cfg.model.dtype}
    return {"batch_size": cfg.rollout.batch_size, "decoder": cfg.rollout.hf_decoder}


def _decide_ratio(exposure, step: int, accelerator: Accelerator) -> float:
    """α_t is global: decided on rank 0, broadcast to every rank."""
    holder = [exposure.ratio_for_step(step) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder, from_process=0)
    return float(holder[0])


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    out = Path(cfg.output_dir)
    accelerator = Accelerator(log_with=cfg.report_to or None, project_dir=str(out))
    with accelerator.main_process_first():  # one process builds the toy world, the others reuse it
        cfg = resolve_toy_paths(cfg)
    set_seed(cfg.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    per_process = cfg.prompts_per_step // world
    if per_process * world != cfg.prompts_per_step or per_process % cfg.optim.grad_accum_steps:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} must split evenly over {world} processes "
            f"× optim.grad_accum_steps={cfg.optim.grad_accum_steps} micro-batches"
        )
    run = RunDir(out, accelerator.is_main_process)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")

    tokenizer = load_tokenizer(cfg.model)
    policy = load_model(cfg.model)
    teacher = Teacher(cfg.teacher.kind, policy, cfg.teacher.ema_decay)
    problems = load_problems(
        cfg.data.train, split=cfg.data.split, on_bad_row=cfg.data.on_bad_row,
        columns={"problem": cfg.data.problem_column, "solution": cfg.data.solution_column,
                 **({"answer": cfg.data.answer_column} if cfg.data.answer_column else {})},
    )
    objective = make_objective(cfg.loss)
    exposure = make_exposure_policy(cfg.exposure, total_steps=cfg.steps)
    probe = ExposureProbe(cfg, problems, tokenizer, exposure.needs_probe_nll, exposure.needs_grounding_score)
    optimizer = make_optimizer(policy, cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.optim, cfg.steps)
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(policy)
    head = output_head(unwrapped)
    engine = make_rollout_engine(cfg.rollout.backend, unwrapped, tokenizer, **_engine_options(cfg))
    sampler = PromptSampler(len(problems), cfg.prompts_per_step, cfg.seed)
    validator = Validator(cfg, tokenizer, out) if cfg.validation.every else None
    if cfg.report_to:
        accelerator.init_trackers("atesd", config={"output_dir": str(out)})

    start, bad_in_a_row = 0, 0
    latest = run.latest() if resume else None
    if latest is not None:
        components = run.load(accelerator, latest[1])
        start, bad_in_a_row = components["step"], components["bad_in_a_row"]
        teacher.load_state_dict(components["teacher"])
        exposure.load_state_dict(components["exposure"])
        if validator is not None:
            validator.load_state_dict(components["validation"])
        engine.sync_weights(unwrapped)
    run.truncate_logs(start)

    group = cfg.rollout.num_generations
    sampling = SamplingParams(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train",
               disable=not (cfg.progress and accelerator.is_main_process))
    ratios_used = []
    for step in bar:
        t0 = time.perf_counter()
        # 1. decide the reveal ratio α_t
        ratio = _decide_ratio(exposure, step, accelerator)
        ratios_used.append(ratio)
        batch = [problems[i] for i in sampler.indices(step, rank, world)]
        batch = [p for p in batch for _ in range(group)]  # G rollouts per prompt (GRPO)

        # 2. rollouts from the student prompt (all micro-batches at once)
        prompts = [student_prompt(tokenizer, p.problem, cfg.prompts) for p in batch]
        if objective.needs_rollouts:
            params = SamplingParams(**{**sampling.__dict__, "seed": _step_seed(cfg.seed, step, rank)})
            rollouts = engine.generate(prompts, params)
            completions = [list(r.completion_ids) for r in rollouts]
            texts = [r.text for r in rollouts]
            correct = score_batch(texts, [p.answer for p in batch], workers=0)
        else:
            references = [reference_completion(p.solution, tokenizer) for p in batch]
            completions = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in references]
            rollouts, correct = None, [True] * len(batch)
        t_rollout = time.perf_counter()

        # 3-4. student/teacher views and the loss, micro-batch by micro-batch
        micro = len(batch) // cfg.optim.grad_accum_steps
        loss_sum, stats = 0.0, []
        for m in range(cfg.optim.grad_accum_steps):
            sl = slice(m * micro, (m + 1) * micro)
            views = StepViews(
                student=build_sequences(prompts[sl], completions[sl], tokenizer.pad_token_id, accelerator.device),
                teacher=build_sequences(
                    [teacher_prompt(tokenizer, p.problem, reveal(p.solution, ratio), cfg.prompts) for p in batch[sl]],
                    completions[sl], tokenizer.pad_token_id, accelerator.device,
                ) if objective.needs_teacher_view else None,
                rewards=torch.tensor(correct[sl], dtype=torch.float32, device=accelerator.device),
                group_size=group,
            )
            sync = m == cfg.optim.grad_accum_steps - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(policy):
                loss, micro_stats = objective.loss(policy, head, teacher, unwrapped, views, len(batch))
                accelerator.backward(loss)
            loss_sum += loss.detach()
            stats.append(micro_stats)
        t_loss = time.perf_counter()

        # the controller's extra signals, on θ_t before the update (ℓ_t and g_t of ATESD section 4)
        extra = probe.measure(accelerator, unwrapped, teacher, ratio, step)

        # 5. update (a non-finite loss on any rank skips the step everywhere)
        finite = bool(accelerator.reduce(torch.isfinite(loss_sum).float().reshape(1), "min").item())
        grad_norm = float("nan")
        if finite:
            grad_norm = float(accelerator.clip_grad_norm_(policy.parameters(), cfg.optim.max_grad_norm))
            optimizer.step()
            scheduler.step()
            teacher.after_optimizer_step(unwrapped)
            engine.sync_weights(unwrapped)
            bad_in_a_row = 0
        else:
            bad_in_a_row += 1
        optimizer.zero_grad(set_to_none=True)

        # 6-7. metrics, exposure signals, logs, checkpoints
        metrics = step_metrics(accelerator, step, ratio, loss_sum, stats, rollouts, correct, completions)
        metrics.update(extra)
        metrics.update({
            "train/grad_norm": grad_norm,
            "train/lr": scheduler.get_last_lr()[0],
            "train/skipped": not finite,
            "timing/rollout_s": t_rollout - t0,
            "timing/loss_s": t_loss - t_rollout,
        })
        if accelerator.is_main_process:
            for record in exposure.observe(step, exposure_signals(metrics) if finite else None):
                run.append("exposure.jsonl", {"step": step, **record})
        metrics["timing/step_s"] = time.perf_counter() - t0
        if validator is not None and validator.due(step):
            metrics.update(validator.run(accelerator, unwrapped, step,
                                         lambda d: save_final(unwrapped, tokenizer, d)))
        metrics["train/tokens_per_s"] = metrics["rollout/tokens"] / metrics["timing/step_s"]
        run.append("metrics.jsonl", metrics)
        if cfg.report_to:
            accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", ratio=f"{ratio:.2f}",
                        tok_s=f"{metrics['train/tokens_per_s']:.0f}")
        if bad_in_a_row >= cfg.max_bad_steps:
            raise FloatingPointError(
                f"{bad_in_a_row} steps in a row had a non-finite loss (last at step {step}); "
                "lower optim.lr or check the data; see metrics.jsonl"
            )
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            components = {"step": step + 1, "bad_in_a_row": bad_in_a_row,
                          "teacher": teacher.state_dict(), "exposure": exposure.state_dict(),
                          "validation": validator.state_dict() if validator is not None else {}}
            run.save(accelerator, step + 1, components, cfg.keep_checkpoints)

    if accelerator.is_main_process:
        save_final(unwrapped, tokenizer, out / "final")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(out, unwrapped, ratios_used, rank, world)


def save_final(model, tokenizer, directory: Path) -> None:
    """The trained model as an ordinary Hugging Face directory, written atomically. A LoRA run
    saves the adapter in `adapter/` and the merged weights at the top, so `atesd eval` loads it."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if is_lora(model):
        model.save_pretrained(tmp / "adapter", safe_serialization=True)
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
