"""A training run's components and plumbing: everything `atesd.train` sets up once.

`TrainingRun.start(cfg, resume)` builds the accelerator (`atesd.distributed.make_accelerator`:
gradient accumulation, and DeepSpeed's clipping, through accelerate), loads the training problems,
then the tokenizer (and drops prompts over `data.max_prompt_tokens`), so that bad data stops a run
before any model loads; then the policy, teacher, objective, exposure policy (and its held-out
probe), optimizer, scheduler, rollout engine and validator, restores a checkpoint when resuming,
and truncates the logs to it. Before all of it, `atesd.checkpoint.check_output_dir` stops a new run
into a folder that holds one (`overwrite` moves the old run aside first). The loop then calls `steps()`, `log(step, metrics)`,
`after_step(step, finite)` and `finish()`: the cross-cutting concerns (progress bar, trackers, the
non-finite-step guard, checkpoint contents and cadence, the final save) live here, one line each in
the loop. `head` is `atesd.distributed.through_head` bound to the unwrapped policy: how the
objectives, whatever the sharding, read the output head's whole weight.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from atesd.checkpoint import RunDir, check_output_dir, move_aside
from atesd.config import TrainConfig, hyperparameters, save_config
from atesd.data import TRAIN_OPTIONS, load_problems
from atesd.data_checks import drop_long_prompts
from atesd.distributed import make_accelerator, through_head
from atesd.divergence_chunked import auto_chunk_size
from atesd.exposure import ProbeCredit, make_exposure_policy
from atesd.models import load_model, load_tokenizer, save_trained
from atesd.objectives import make_objective
from atesd.optim import make_optimizer, make_scheduler
from atesd.probe import ExposureProbe, hold_out_probe
from atesd.prompts import student_prompt
from atesd.rollout import make_rollout_engine
from atesd.teacher import Teacher
from atesd.validation import Validator, load_validation_problems

logger = logging.getLogger(__name__)


class PromptSampler:
    """Which problems step t uses: a seeded permutation per epoch, a pure function of (seed, t),
    so a resumed run sees exactly the prompts an uninterrupted one would."""

    def __init__(self, n_problems: int, global_batch: int, seed: int):
        if n_problems < 1:
            raise ValueError("no training problems to sample prompts from")
        self.n, self.global_batch, self.seed = n_problems, global_batch, seed

    def indices(self, step: int, rank: int, world: int) -> list[int]:
        out = []
        for pos in range(step * self.global_batch, (step + 1) * self.global_batch):
            epoch, offset = divmod(pos, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            out.append(int(perm[offset]))
        return out[rank::world]


def rollout_length_limit(cfg: TrainConfig, tokenizer, problems: list) -> int:
    """The longest sequence the rollout engine will hold: the longest student prompt of the training
    problems (`data.max_prompt_tokens` when set: longer ones were dropped) + rollout.max_new_tokens.
    The engine samples student prompts only; teacher prompts are scored by the training model."""
    longest = cfg.data.max_prompt_tokens
    if longest is None:
        longest = max(len(student_prompt(tokenizer, p.problem, cfg.prompts)) for p in problems)
    return longest + cfg.rollout.max_new_tokens


def _engine_options(cfg: TrainConfig, accelerator, tokenizer, problems: list) -> dict:
    """The rollout engine's options. vLLM: `max_model_len` is `rollout_length_limit` (without it
    vLLM reserves for the model's whole context, 40,960 tokens for Qwen3, and a large engine may not
    start at a low memory fraction), and the engine starts from `model.name_or_path` (at step 0 the
    weights are the base model's, LoRA's B being zero; a resumed run syncs its weights before the
    first rollout) rather than from a merged checkpoint each process would write first."""
    if cfg.rollout.backend == "vllm":
        r = cfg.rollout
        options = {"gpu_memory_utilization": r.vllm_gpu_memory_utilization, "enforce_eager": r.vllm_enforce_eager,
                   "enable_sleep_mode": r.vllm_sleep_mode, "seed": cfg.seed, "dtype": cfg.model.dtype,
                   "max_model_len": rollout_length_limit(cfg, tokenizer, problems),
                   "model_path": cfg.model.name_or_path}
        if accelerator.num_processes > 1:  # one engine per process, in the launcher's process group
            options["distributed_executor_backend"] = "external_launcher"
        return options
    return {"batch_size": cfg.rollout.batch_size, "decoder": cfg.rollout.hf_decoder}


def resolve_loss(cfg: TrainConfig, policy):
    """cfg.loss with an automatic chunk size (`loss.chunk_size: null`) made concrete for the
    policy's vocabulary (`atesd.divergence_chunked.auto_chunk_size`)."""
    if cfg.loss.chunk_size is not None:
        return cfg.loss
    vocab = policy.get_output_embeddings().weight
    vocab = getattr(vocab, "ds_shape", vocab.shape)[0]
    return replace(cfg.loss, chunk_size=auto_chunk_size(vocab, cfg.loss.chunk_memory_mib))


def _check_credit_supported(cfg: TrainConfig, accelerator) -> None:
    """The counterfactual credit differentiates (forward mode) or perturbs (central difference, float32
    only) the full local parameters (`atesd.exposure.credit`)."""
    if cfg.exposure.credit_derivative == "central_difference" and cfg.model.dtype != "float32":
        raise ValueError("exposure.credit_derivative=central_difference needs model.dtype=float32 (the difference "
                         "would drown in bfloat16 rounding); use exposure.credit_derivative=forward_mode")
    if accelerator.distributed_type.name in ("FSDP", "DEEPSPEED"):
        raise ValueError(f"exposure.reward=counterfactual perturbs the full parameters; it does not run under "
                         f"{accelerator.distributed_type.name} (use DDP or one process)")


def _load_training_problems(cfg: TrainConfig) -> list:
    columns = {"problem": cfg.data.problem_column, "solution": cfg.data.solution_column,
               **({"answer": cfg.data.answer_column} if cfg.data.answer_column else {})}
    return load_problems(cfg.data.train, split=cfg.data.split, on_bad_row=cfg.data.on_bad_row, columns=columns,
                         max_bad_row_share=cfg.data.max_bad_row_share, options=TRAIN_OPTIONS)


@dataclass
class TrainingRun:
    cfg: TrainConfig
    accelerator: Accelerator
    dir: RunDir
    tokenizer: object
    policy: torch.nn.Module  # as prepared by accelerate (wrapped under DDP/FSDP)
    unwrapped: torch.nn.Module
    head: object  # through_head(unwrapped, fn, *inputs): fn(the head's whole weight, *inputs)
    teacher: Teacher
    problems: list
    sampler: PromptSampler
    objective: object
    exposure: object
    probe: ExposureProbe | None
    credit: ProbeCredit | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    engine: object
    validator: Validator | None
    start_step: int = 0
    bad_in_a_row: int = 0
    bar: tqdm | None = None

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @classmethod
    def start(cls, cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainingRun:
        out = Path(cfg.output_dir)
        check_output_dir(out, resume, overwrite)  # before anything is written: two runs never mix
        accelerator = make_accelerator(cfg, str(out))
        # every process has checked the folder before process 0 writes into it (or moves it aside):
        # a process that starts late would otherwise find process 0's files and refuse a new run
        accelerator.wait_for_everyone()
        if overwrite:
            if accelerator.is_main_process:
                move_aside(out)
            accelerator.wait_for_everyone()
        set_seed(cfg.seed)
        world = accelerator.num_processes
        per_process = cfg.prompts_per_step // world
        if per_process * world != cfg.prompts_per_step or per_process % cfg.optim.grad_accum_steps:
            raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must split evenly over {world} processes "
                             f"× optim.grad_accum_steps={cfg.optim.grad_accum_steps} micro-batches")
        # Bad data stops the run before any model loads (prompt lengths need the tokenizer only).
        problems = _load_training_problems(cfg)
        validation_problems = load_validation_problems(cfg) if cfg.validation.every else None
        tokenizer = load_tokenizer(cfg.model)
        problems = drop_long_prompts(problems, tokenizer, cfg.prompts, cfg.data.max_prompt_tokens, cfg.data.train)
        if validation_problems is not None:
            validation_problems = drop_long_prompts(validation_problems, tokenizer, cfg.prompts,
                                                    cfg.data.max_prompt_tokens, str(cfg.data.val))
        run_dir = RunDir(out, accelerator.is_main_process)
        if accelerator.is_main_process:
            save_config(cfg, out / "config.yaml")
        policy = load_model(cfg.model)
        teacher = Teacher(cfg.teacher.kind, policy, cfg.teacher.ema_decay)
        loss_cfg = resolve_loss(cfg, policy)
        objective = make_objective(loss_cfg)
        exposure = make_exposure_policy(cfg.exposure, total_steps=cfg.steps)
        probe = credit = None
        if exposure.needs_probe_nll or exposure.needs_grounding_score:
            problems, probe_set, grounding_set = hold_out_probe(problems, cfg.exposure.probe_size, cfg.seed)
            probe = ExposureProbe(probe_set, grounding_set, tokenizer, cfg.prompts, loss_cfg.chunk_size,
                                  exposure.needs_probe_nll, exposure.needs_grounding_score, exposure.probe_every,
                                  cache_grounding=cfg.teacher.kind == "frozen")
            if exposure.needs_credit:
                _check_credit_supported(cfg, accelerator)
                credit = ProbeCredit(probe_set, tokenizer, cfg.prompts, loss_cfg, cfg.exposure.credit_step,
                                     refresh_every=cfg.exposure.credit_refresh_steps,
                                     derivative=cfg.exposure.credit_derivative)
        optimizer = make_optimizer(policy, cfg.optim)
        scheduler = make_scheduler(optimizer, cfg.optim, cfg.steps)
        policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
        unwrapped = accelerator.unwrap_model(policy)
        teacher.to(accelerator.device)
        run = cls(cfg, accelerator, run_dir, tokenizer, policy, unwrapped, functools.partial(through_head, unwrapped),
                  teacher, problems, PromptSampler(len(problems), cfg.prompts_per_step, cfg.seed), objective, exposure,
                  probe, credit, optimizer, scheduler,
                  make_rollout_engine(cfg.rollout.backend, unwrapped, tokenizer,
                                      **_engine_options(cfg, accelerator, tokenizer, problems)),
                  Validator(cfg, tokenizer, out, validation_problems) if validation_problems is not None else None)
        if cfg.report_to:
            accelerator.init_trackers("atesd", config=hyperparameters(cfg))
        if resume:
            run._restore()
        run.dir.truncate_logs(run.start_step)
        return run

    def _restore(self) -> None:
        latest = self.dir.latest()
        if latest is None:
            logger.warning("%s: nothing to resume (no checkpoint in %s): starting at step 0",
                           self.cfg.output_dir, self.dir.checkpoints)
            return
        components = self.dir.load(self.accelerator, latest[1])
        self.start_step, self.bad_in_a_row = components["step"], components["bad_in_a_row"]
        self.teacher.load_state_dict(components["teacher"])
        self.exposure.load_state_dict(components["exposure"])
        if self.validator is not None:
            self.validator.load_state_dict(components["validation"])
        if self.credit is not None:
            self.credit.load_state_dict(components.get("credit", {}), self.accelerator.device)
        if self.probe is not None:
            self.probe.load_state_dict(components.get("probe", {}))
        self.engine.sync_weights(self.unwrapped)

    def exposure_wants_credit(self, step: int) -> bool:
        """Whether step t's paired credit is measured: the policy decides on rank 0 (broadcast)."""
        holder = [self.exposure.wants_credit(step) if self.accelerator.is_main_process else None]
        if self.world > 1:
            broadcast_object_list(holder, from_process=0)
        return bool(holder[0])

    def steps(self):
        """The steps still to run, with a progress bar on the main process."""
        self.bar = tqdm(range(self.start_step, self.cfg.steps), initial=self.start_step, total=self.cfg.steps,
                        desc="train", disable=not (self.cfg.progress and self.accelerator.is_main_process))
        return self.bar

    def save_model(self, directory: Path, extra_json: dict | None = None) -> None:
        """Every process calls it (a sharded model is gathered); the main process writes."""
        save_trained(self.unwrapped, self.tokenizer, directory, extra_json, is_main=self.accelerator.is_main_process)

    def log(self, step: int, metrics: dict) -> None:
        self.dir.append("metrics.jsonl", metrics)
        if self.cfg.report_to:
            self.accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        self.bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", ratio=f"{metrics['exposure/reveal_ratio']:.2f}",
                             tok_s=f"{metrics['train/tokens_per_s']:.0f}")

    def after_step(self, step: int, finite: bool) -> None:
        """The non-finite-step guard, then a checkpoint when one is due."""
        self.bad_in_a_row = 0 if finite else self.bad_in_a_row + 1
        if self.bad_in_a_row >= self.cfg.max_bad_steps:
            raise FloatingPointError(
                f"{self.bad_in_a_row} steps in a row had a non-finite loss (last at step {step}); "
                "lower optim.lr or check the data; see metrics.jsonl")
        if (step + 1) % self.cfg.save_every == 0 or step + 1 == self.cfg.steps:
            components = {"step": step + 1, "bad_in_a_row": self.bad_in_a_row,
                          "teacher": self.teacher.state_dict(), "exposure": self.exposure.state_dict(),
                          "validation": self.validator.state_dict() if self.validator is not None else {},
                          "credit": self.credit.state_dict() if self.credit is not None else {},
                          "probe": self.probe.state_dict() if self.probe is not None else {}}
            self.dir.save(self.accelerator, step + 1, components, self.cfg.keep_checkpoints)

    def finish(self) -> None:
        self.save_model(Path(self.cfg.output_dir) / "final")
        self.accelerator.wait_for_everyone()
        self.engine.close()  # before end_training: vLLM's shutdown tears down the process groups itself
        self.accelerator.end_training()
