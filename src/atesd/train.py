"""The one training loop: OPSD, fixed/random/scheduled exposure, ATESD, SFT and GRPO.

Per optimizer step t (ATESD, arXiv 2605.11458, Algorithm 1; OPSD, arXiv 2601.18734), each phase
timed and logged as `timing/<phase>_s`:

  sample   ŷ ~ p_S(·|x) for this process's prompts (one generation call for all micro-batches)
  decide   the reveal ratio α of every example from the exposure policy (rank 0 decides, every
           rank uses it): one α for the batch (ATESD) or one per example (per-difficulty,
           per-example policies); after sampling, because α only shapes the teacher's view of
           the rollout, and per-example policies look at the rollout (exposure.feature=divergence:
           each rollout's divergence at α = 1 first, one no-grad teacher and student forward)
  views    student = student prompt + ŷ; teacher = teacher prompt with ỹ*_α + the same ŷ
  probe    the controller's probe NLL and grounding score g_t on θ_t (learned exposure only), before
           the loss: under DeepSpeed the engine updates θ inside the last backward
  loss     the objective's per-token loss on completion positions, micro-batch by micro-batch, each
           under `accelerator.accumulate` (gradients synchronised on the last one only)
  credit   reward="counterfactual": the paired first-order probe credit of α and α′ on θ_t
  update   clip gradients, optimizer and scheduler step; EMA teacher; sync the rollout engine
  observe  the step's summary → the exposure policy (reward, controller update)
then validation when due (`timing/validate_s`, outside `timing/step_s`), metrics.jsonl and
exposure.jsonl, and an atomic checkpoint when due.

A non-finite loss skips the step on every process. The loss of all micro-batches is checked, over
all processes, before the last micro-batch's backward, because under DeepSpeed that backward is
where the engine clips and steps (accelerate's `DeepSpeedEngineWrapper`). On a step to skip, under
DeepSpeed the last micro-batch's loss is multiplied by NaN before its backward, so that every
gradient is NaN and DeepSpeed's own overflow check (bf16 `check_grad_overflow`, on by default;
fp16's loss scaler; the invalid gradient norm with clipping on) discards the accumulated gradients
and skips the update and the scheduler; the loop then checks `accelerator.optimizer_step_was_skipped`
and stops if the engine stepped anyway. Under DDP and FSDP2 the loop itself skips the optimizer and
scheduler and zeroes the gradients. A step DeepSpeed skips for non-finite gradients of a finite
loss is logged as skipped too.

What is set up once (models, data, policy, optimizer, checkpoint restore) is in `atesd.run`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list, gather_object

from atesd.answers import score_batch
from atesd.config import TrainConfig
from atesd.exposure import ExampleContext, StepCredit, signals_from
from atesd.metrics import summarize_step
from atesd.objectives import StepViews
from atesd.prompts import reference_completion, student_prompt, teacher_view
from atesd.rollout import SamplingParams
from atesd.run import TrainingRun
from atesd.scoring import build_sequences, text_ids


@dataclass
class TrainResult:
    """What `train` returns: the run directory, the trained (unwrapped) model on this process, the
    reveal ratio this process used at each step (tests compare them across ranks), the steps run
    now, their seconds and the last step's loss. Its repr leaves out the model and the ratios;
    `summary()` is the screen the CLI prints at the end of a run."""

    output_dir: Path
    model: torch.nn.Module = field(repr=False)
    reveal_ratios: list[float] = field(repr=False)
    process_index: int = 0
    num_processes: int = 1
    steps: int = 0  # the run's last step + 1 (cfg.steps when it ran to the end)
    steps_run: int = 0  # steps run by this call (fewer than `steps` when it resumed)
    seconds: float = 0.0
    final_loss: float | None = None

    def summary(self) -> str:
        """Steps, time, final loss, where the model is and the next commands to run."""
        loss = "n/a" if self.final_loss is None else f"{self.final_loss:.4f}"
        out = self.output_dir
        return "\n".join([
            f"trained {self.steps_run} step(s) in {self.seconds:.1f} s (run at step {self.steps}); final loss {loss}",
            f"run directory: {out} (config.yaml, metrics.jsonl, exposure.jsonl, checkpoints/)",
            f"trained model: {out / 'final'}"
            + (f"; best by validation: {out / 'best'}" if (out / "best").is_dir() else ""),
            f"next: atesd report {out}",
            f"      atesd eval --model {out / 'final'} --data <problems file>",
        ])


class PhaseTimer:
    """`with timer("loss"): …` adds the block's seconds to `timing/loss_s` of the current step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        started = time.perf_counter()
        yield
        self.seconds[f"timing/{phase}_s"] = self.seconds.get(f"timing/{phase}_s", 0.0) + time.perf_counter() - started


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train with `cfg` (model and data paths resolved: `toy:` names belong to the entry points and
    `atesd.api`); with `resume`, continue from the latest checkpoint in `cfg.output_dir`; with
    `overwrite`, move a previous run in it aside first (`atesd.checkpoint.check_output_dir`)."""
    began = time.perf_counter()
    run = TrainingRun.start(cfg, resume, overwrite)
    ratios_used, loss = [], None
    for step in run.steps():
        timer, started = PhaseTimer(), time.perf_counter()
        with timer("sample"):
            batch, prompts, completions, rollouts, correct = sample(run, step)
        with timer("decide"):
            full = (full_exposure_divergence(run, batch, prompts, completions, correct)
                    if run.exposure.needs_full_divergence else None)
            ratios, counterfactual, reveal_ratio = decide(run, step, batch, completions, rollouts, correct, full)
        with timer("views"):
            micro_batches = build_views(run, batch, prompts, completions, correct, ratios)
        memory = device_memory(run.accelerator.device)  # after the rollout engine's sleep, before the loss
        with timer("probe"):  # on θ_t, before the backward: DeepSpeed steps inside the last one
            measured = run.probe.measure(run.unwrapped, run.teacher, reveal_ratio, step) if run.probe else {}
        credit = None
        if run.credit is not None and run.exposure_wants_credit(step):
            with timer("credit"):  # on θ_t, likewise
                credit = measure_credit(run, step, batch, prompts, completions, ratios, counterfactual)
        with timer("loss"):
            loss_sum, stats, finite = loss_and_backward(run, micro_batches, len(batch))
        with timer("update"):
            finite, grad_norm = update(run, finite)
        with timer("observe"):
            summary = summarize_step(run.accelerator, loss_sum, stats, rollouts, correct, completions,
                                     run.cfg.rollout.num_generations)
            if run.accelerator.is_main_process:
                signals = signals_from(summary, measured) if finite else None
                for record in run.exposure.observe(step, signals, credit):
                    run.dir.append("exposure.jsonl", {"step": step, **record})
        metrics = {"step": step, **summary.metrics(), "exposure/reveal_ratio": reveal_ratio,
                   **{f"exposure/{k}": v for k, v in measured.items()}, "train/grad_norm": grad_norm,
                   "train/lr": run.scheduler.get_last_lr()[0], "train/skipped": not finite,
                   **timer.seconds, "timing/step_s": time.perf_counter() - started, **memory}
        metrics["train/tokens_per_s"] = metrics["rollout/tokens"] / metrics["timing/step_s"]
        if run.validator is not None and run.validator.due(step):
            with timer("validate"):
                metrics.update(run.validator.run(run.accelerator, run.unwrapped, step, run.save_model))
            metrics["timing/validate_s"] = timer.seconds["timing/validate_s"]
        run.log(step, metrics)
        run.after_step(step, finite)
        ratios_used.append(reveal_ratio)
        loss = float(metrics["train/loss"])
    run.finish()
    return TrainResult(Path(cfg.output_dir), run.unwrapped, ratios_used, run.rank, run.world, steps=cfg.steps,
                       steps_run=len(ratios_used), seconds=time.perf_counter() - began, final_loss=loss)


def sample(run: TrainingRun, step: int):
    """This process's problems of step t, their student prompts, the completions the loss scores
    (rollouts, or the references for SFT), the rollouts and their verified answers."""
    cfg, tokenizer = run.cfg, run.tokenizer
    batch = [run.problems[i] for i in run.sampler.indices(step, run.rank, run.world)]
    batch = [p for p in batch for _ in range(cfg.rollout.num_generations)]  # G rollouts per prompt (GRPO)
    prompts = [student_prompt(tokenizer, p.problem, cfg.prompts) for p in batch]
    if not run.objective.needs_rollouts:
        completions = [text_ids(tokenizer, reference_completion(p.solution, tokenizer)) for p in batch]
        return batch, prompts, completions, None, [True] * len(batch)
    r = cfg.rollout
    params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k, seed=step_seed(cfg.seed, step, run.rank))
    rollouts = run.engine.generate(prompts, params)
    run.engine.sleep()  # vLLM sleep mode: free its memory for the loss (a no-op otherwise)
    correct = score_batch([x.text for x in rollouts], [p.answer for p in batch], workers=0)
    return batch, prompts, [list(x.completion_ids) for x in rollouts], rollouts, correct


def device_memory(device) -> dict:
    """On a GPU: `memory/device_used_gib` (the device's memory in use, every allocator included: with
    vLLM sleep mode its engine has released its share) and torch's `memory/peak_allocated_gib`."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"memory/device_used_gib": (total - free) / 2**30,
            "memory/peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30}


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank * 7) % (2**31 - 1)


def decide(run: TrainingRun, step: int, batch, completions, rollouts, correct, full_divergence=None):
    """This process's ratios (and counterfactual ratios, or None) and the batch's mean α: the policy
    decides on rank 0 from every process's example contexts and the choice is broadcast.
    full_divergence: each rollout's divergence at α = 1 (`full_exposure_divergence`), when the policy asks."""
    max_new = run.cfg.rollout.max_new_tokens
    contexts = [ExampleContext(p.difficulty, bool(ok), sum(r.logprobs) / max(1, len(r.logprobs)) if r else 0.0,
                               len(c) / max_new, p.id, d)
                for p, c, r, ok, d in zip(batch, completions, rollouts or [None] * len(batch), correct,
                                          full_divergence or [None] * len(batch))]
    everyone = gather_object(contexts) if run.world > 1 else contexts
    holder = [run.exposure.decide(step, everyone) if run.accelerator.is_main_process else None]
    if run.world > 1:
        broadcast_object_list(holder, from_process=0)
    choice, mine = holder[0], slice(run.rank * len(batch), (run.rank + 1) * len(batch))
    counterfactual = None if choice.counterfactual is None else choice.counterfactual[mine]
    return choice.ratios[mine], counterfactual, choice.mean


@torch.no_grad()
def full_exposure_divergence(run: TrainingRun, batch, prompts, completions, correct) -> list[float]:
    """Each rollout's mean per-token training divergence D(p_T^1 ‖ p_S) with the teacher at full exposure
    (α = 1), on θ_t: the objective's own loss on views at α = 1, without gradients (exposure.feature=divergence;
    one more teacher and student forward per step). Every process calls it."""
    if not run.objective.needs_teacher_view:
        raise ValueError(f"exposure.feature=divergence needs a distillation objective (a teacher view), not "
                         f"loss.objective={run.cfg.loss.objective}")
    values = []
    for views in build_views(run, batch, prompts, completions, correct, [1.0] * len(batch)):
        _, stats = run.objective.loss(run.policy, run.head, run.teacher, run.unwrapped, views, len(batch))
        values += stats.per_rollout().tolist()
    return values


def build_views(run: TrainingRun, batch, prompts, completions, correct, ratios: list[float]) -> list[StepViews]:
    """The student and teacher sequences of each gradient-accumulation micro-batch."""
    cfg, device, pad = run.cfg, run.accelerator.device, run.tokenizer.pad_token_id
    size = len(batch) // cfg.optim.grad_accum_steps
    views = []
    for start in range(0, len(batch), size):
        rows = slice(start, start + size)
        teacher = None
        if run.objective.needs_teacher_view:
            teacher_prompts = [teacher_view(run.tokenizer, p, a, cfg.prompts) for p, a in zip(batch[rows], ratios[rows])]
            teacher = build_sequences(teacher_prompts, completions[rows], pad, device)
        views.append(StepViews(
            student=build_sequences(prompts[rows], completions[rows], pad, device), teacher=teacher,
            rewards=torch.tensor(correct[rows], dtype=torch.float32, device=device),
            group_size=cfg.rollout.num_generations))
    return views


def loss_and_backward(run: TrainingRun, micro_batches: list[StepViews], rollouts_per_process: int):
    """Σ over micro-batches of the objective's loss, gradients accumulated through
    `accelerator.accumulate` (accelerate divides each backward by the accumulation steps; the
    objectives already weight a micro-batch by its share of the process's rollouts, so the loop
    hands it loss × steps), each micro-batch's LossStats, and whether the step's loss is finite on
    every process (checked before the last backward; module docstring)."""
    accelerator, steps = run.accelerator, len(micro_batches)
    loss_sum, stats, finite = 0.0, [], True
    for index, views in enumerate(micro_batches):
        with accelerator.accumulate(run.policy):
            loss, micro_stats = run.objective.loss(run.policy, run.head, run.teacher, run.unwrapped, views,
                                                   rollouts_per_process)
            loss_sum += loss.detach()
            stats.append(micro_stats)
            if index == steps - 1:
                finite = all_finite(accelerator, loss_sum)
                if not finite and accelerator.distributed_type.name == "DEEPSPEED":
                    loss = loss * float("nan")  # DeepSpeed's overflow check then skips the step
            accelerator.backward(loss * steps if steps > 1 else loss)
    return loss_sum, stats, finite


def all_finite(accelerator, value) -> bool:
    """Whether `value` is finite on every process: one max-reduction of the non-finite flag
    (accelerate's `reduce` knows sum, mean and max; any other name, e.g. "min", is a sum)."""
    return not bool(accelerator.reduce((~torch.isfinite(value)).float().reshape(1), "max").item())


def measure_credit(run: TrainingRun, step: int, batch, prompts, completions, ratios, counterfactual) -> StepCredit:
    """The paired first-order credit c_i(α_i), c_i(α′_i) of this process's first examples (their share
    of exposure.credit_examples), gathered on rank 0 as a StepCredit with global example indices."""
    cfg, tokenizer, device = run.cfg, run.tokenizer, run.accelerator.device
    k = max(1, min(len(batch), cfg.exposure.credit_examples // run.world))
    pad = tokenizer.pad_token_id
    student = build_sequences(prompts[:k], completions[:k], pad, device)
    views = [build_sequences([teacher_view(tokenizer, p, a, cfg.prompts) for p, a in zip(batch[:k], arm[:k])],
                             completions[:k], pad, device) for arm in (ratios, counterfactual)]
    values = run.credit.measure(run.unwrapped, run.teacher, student, views,
                                run.credit.direction_at(step, run.unwrapped, run.optimizer))
    mine = [(run.rank * len(batch) + i, float(values[0, i]), float(values[1, i])) for i in range(k)]
    everyone = gather_object(mine) if run.world > 1 else mine
    return StepCredit(*(tuple(column) for column in zip(*everyone)))


def update(run: TrainingRun, finite: bool) -> tuple[bool, float]:
    """One optimizer step when the loss was finite on every process (`loss_and_backward`); returns
    whether the weights changed and the gradient norm before clipping (NaN on a skipped step)."""
    accelerator = run.accelerator
    deepspeed = accelerator.distributed_type.name == "DEEPSPEED"
    grad_norm = float("nan")
    if finite:
        # under DeepSpeed the engine has clipped and stepped in the last backward: this reads its norm
        grad_norm = float(accelerator.clip_grad_norm_(run.policy.parameters(), run.cfg.optim.max_grad_norm))
        run.optimizer.step()
        run.scheduler.step()
        if deepspeed and accelerator.optimizer_step_was_skipped:  # non-finite gradients of a finite loss
            finite, grad_norm = False, float("nan")
    elif deepspeed and not accelerator.optimizer_step_was_skipped:
        raise FloatingPointError("the loss was not finite but DeepSpeed applied the update (is "
                                 "bf16.check_grad_overflow off?); the weights are no longer valid")
    if finite:
        run.teacher.after_optimizer_step(run.unwrapped)
        run.engine.sync_weights(run.unwrapped)
    run.optimizer.zero_grad(set_to_none=True)
    return finite, grad_norm
