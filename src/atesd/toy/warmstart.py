"""Warm start: supervised training of a toy model as both student and teacher.

The base model of a self-distillation run must (a) solve part of the problems alone and (b) use a
reference shown in its context. Both come from one supervised mix, with the loss on completion
tokens only (cross-entropy over [B, T, V] logits at the completion positions):

- student examples: student prompt (problem only) → reference solution;
- teacher examples: teacher prompt with a reference revealed at ratio α → a solution.

For the toy task a teacher example's completion is a solution of the same program, either in the
reference's own step order ("copy-friendly": without these the teacher ignored the reference,
docs/toy-world.md) or in an independently drawn valid order. Optionally (`wrong_prefix_prob`) it is a
student-style wrong solution: one step goes wrong, the rest continues consistently with the wrong
value, and the loss skips the wrong step. Such a teacher, scoring a student rollout after its first
error, predicts continuations consistent with the student's own prefix rather than reference values
(the failure docs/toy-world.md analyses). For other data the completion is the reference solution.

The same training function runs the supervised control that measures headroom.

Where this departs from the papers (they start from pretrained Qwen3 checkpoints):
1. The model is trained from scratch on the task; teacher-format examples replace the general
   instruction-following a pretrained model brings.
2. Student examples can be restricted to easy levels (`student_max_level`), so the student is weak
   on hard problems and a training method has room to improve it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from atesd.data import Problem
from atesd.prompts import PromptConfig, reference_completion, student_prompt, teacher_view
from atesd.toy import task

IGNORE_INDEX = -100


@dataclass(frozen=True)
class WarmStartConfig:
    """The supervised mix and its optimiser.

    steps: optimiser steps. batch_size: examples per step.
    lr: peak AdamW learning rate; linear warm-up over warmup_steps, then cosine to lr·min_lr_ratio.
    weight_decay: AdamW decoupled weight decay. grad_clip: global gradient-norm clip.
    teacher_fraction: share of teacher-format examples.
    full_reveal_prob: probability that a teacher example reveals the whole reference (α = 1);
        otherwise α ~ U[0, 1].
    copy_order_prob: (toy task) probability that a teacher example's completion uses the reference's
        own step order; otherwise an independently drawn valid order.
    wrong_prefix_prob: (toy task) probability that a teacher example's completion is a wrong
        solution continued consistently after its first wrong step (loss skips that step).
    student_wrong_prefix_prob: (toy task) the same for student examples: the student format too
        learns to continue its own wrong prefix consistently, as a pretrained model does (a wrong
        step is never a target), so that after an error the two formats differ only by what the
        reference tells.
    student_max_level: student examples only from problems of difficulty <= this (None: all).
    student_reorder: (toy task) student completions use a freshly drawn valid order instead of the
        reference's.
    bucket_batches: batches drawn together and grouped by length to cut padding (1: random
        batches; grouping saves compute but its uniform batches learnt far slower per second here).
    """

    steps: int = 1200
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    teacher_fraction: float = 0.5
    full_reveal_prob: float = 0.3
    copy_order_prob: float = 0.7
    wrong_prefix_prob: float = 0.25
    student_wrong_prefix_prob: float = 0.0
    student_max_level: int | None = 3
    student_reorder: bool = True
    bucket_batches: int = 1

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("warm_start needs steps >= 0 and batch_size >= 1")
        for name in ("teacher_fraction", "full_reveal_prob", "copy_order_prob", "wrong_prefix_prob",
                     "student_wrong_prefix_prob", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"warm_start.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Example:
    """One supervised sequence: prompt ids, completion ids, and which completion ids carry loss."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def completion_example(tokenizer, prompt_ids: Sequence[int], completion: str,
                       skip: tuple[int, int] | None = None) -> Example:
    """An example whose completion is `completion` + EOS; characters in `skip` (start, end) get no
    loss. The text is encoded in pieces cut just before a blank line, which the pre-tokenizer
    splits the same way inside one string, so the ids match encoding the whole text."""
    text = reference_completion(completion, tokenizer)
    pieces = [(text, True)] if skip is None else [
        (text[: skip[0]], True), (text[skip[0]: skip[1]], False), (text[skip[1]:], True)]
    ids: list[int] = []
    mask: list[bool] = []
    for piece, trained in pieces:
        piece_ids = _encode(tokenizer, piece) if piece else []
        ids += piece_ids
        mask += [trained] * len(piece_ids)
    return Example(tuple(prompt_ids), tuple(ids), tuple(mask))


def _reveal_ratio(rng: random.Random, cfg: WarmStartConfig) -> float:
    return 1.0 if rng.random() < cfg.full_reveal_prob else rng.random()


def _is_toy(problem: Problem) -> bool:
    return problem.source == task.SOURCE


def _toy_completion(root: task.Node, order: Sequence[task.Path], rng: random.Random,
                   wrong_prefix_prob: float) -> tuple[str, tuple[int, int] | None]:
    """A solution in `order`; with probability wrong_prefix_prob a wrong one continued consistently
    after its wrong step, with the (start, end) characters of that step to skip in the loss.
    (No random draw when the probability is 0, so a stream without wrong prefixes is unchanged.)"""
    if wrong_prefix_prob == 0.0 or rng.random() >= wrong_prefix_prob:
        return task.solution_text(root, order), None
    text, wrong = task.corrupted_solution(root, order, rng)
    starts = [0] + [i + 2 for i in range(len(text)) if text.startswith("\n\n", i)]
    start = starts[wrong] - 2 if wrong > 0 else 0  # cut before the blank line preceding the step
    return text, (start, starts[wrong + 1] - 2)


def _toy_teacher_completion(problem: Problem, rng: random.Random,
                            cfg: WarmStartConfig) -> tuple[str, tuple[int, int] | None]:
    root = task.parse_problem(problem.problem)
    if rng.random() < cfg.copy_order_prob:
        order = task.solution_order(problem.problem, problem.solution)
    else:
        order = task.random_order(root, rng)
    return _toy_completion(root, order, rng, cfg.wrong_prefix_prob)


def make_example(problem: Problem, tokenizer, prompt_cfg: PromptConfig, rng: random.Random,
                 cfg: WarmStartConfig, teacher: bool) -> Example:
    """A student or teacher example for one problem (see the module docstring)."""
    if not teacher:
        prompt = student_prompt(tokenizer, problem.problem, prompt_cfg)
        if not _is_toy(problem):
            return completion_example(tokenizer, prompt, problem.solution)
        root = task.parse_problem(problem.problem)
        order = (task.random_order(root, rng) if cfg.student_reorder
                 else task.solution_order(problem.problem, problem.solution))
        return completion_example(tokenizer, prompt, *_toy_completion(root, order, rng, cfg.student_wrong_prefix_prob))
    prompt = teacher_view(tokenizer, problem, _reveal_ratio(rng, cfg), prompt_cfg)
    if not _is_toy(problem):
        return completion_example(tokenizer, prompt, problem.solution)
    completion, skip = _toy_teacher_completion(problem, rng, cfg)
    return completion_example(tokenizer, prompt, completion, skip)


def example_stream(problems: Sequence[Problem], tokenizer, prompt_cfg: PromptConfig, cfg: WarmStartConfig,
                   seed: int) -> Iterator[Example]:
    """An endless, seeded stream of warm-start examples drawn from `problems`."""
    rng = random.Random(f"{seed}:warm-start")
    student_pool = [p for p in problems if cfg.student_max_level is None or p.difficulty is None
                    or p.difficulty <= cfg.student_max_level]
    if not student_pool and cfg.teacher_fraction < 1:
        raise ValueError("warm_start.student_max_level leaves no student examples; raise it or set it to None")
    while True:
        teacher = rng.random() < cfg.teacher_fraction
        problem = rng.choice(problems if teacher else student_pool)
        yield make_example(problem, tokenizer, prompt_cfg, rng, cfg, teacher)


def batches(examples: Iterator[Example], batch_size: int, bucket_batches: int, seed: int) -> Iterator[list[Example]]:
    """Batches grouped by length: `bucket_batches` batches are drawn, sorted by length, shuffled."""
    rng = random.Random(f"{seed}:batches")
    while True:
        pool = [next(examples) for _ in range(batch_size * bucket_batches)]
        pool.sort(key=lambda e: len(e.prompt_ids) + len(e.completion_ids))
        group = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(group)
        yield from group


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask [B, T] and labels [B, T] (IGNORE_INDEX off-loss)."""
    width = max(len(e.prompt_ids) + len(e.completion_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(batch):
        ids = list(e.prompt_ids) + list(e.completion_ids)
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        targets = [t if keep else IGNORE_INDEX for t, keep in zip(e.completion_ids, e.loss_mask)]
        labels[row, len(e.prompt_ids): len(ids)] = torch.tensor(targets, dtype=torch.long)
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def learning_rate(step: int, cfg: WarmStartConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr · min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (completion) positions of the batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    targets = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def train_supervised(model, tokenizer, examples: Iterator[Example], cfg: WarmStartConfig, seed: int,
                     progress: bool = True, description: str = "warm start") -> list[float]:
    """Run cfg.steps AdamW steps on `examples`; returns the loss of every step."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")  # faster than sdpa for these small shapes on CPU
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    stream = batches(examples, cfg.batch_size, cfg.bucket_batches, seed)
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc=description, disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = completion_loss(model, collate(next(stream), tokenizer.pad_token_id))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    model.set_attn_implementation(attention)
    return losses
