"""Periodic validation: sampled Average@k on `data.val`, and the best model kept by it.

Checkpoints are chosen on the validation split only; the test split is for the final report
(peers select the best checkpoint per benchmark on the test set, which inflates their numbers).
Problems are split across processes and the per-problem accuracies gathered, so every process
takes part (sharded models need that) and none repeats another's work.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from accelerate.utils import gather_object

from atesd.data import TRAIN_OPTIONS, load_problems
from atesd.distributed import is_sharded
from atesd.evaluate import evaluate
from atesd.rollout.base import SamplingParams


def load_validation_problems(cfg) -> list:
    """The first `validation.max_problems` problems of `data.val` (loaded before any model)."""
    return load_problems(cfg.data.val, on_bad_row=cfg.data.on_bad_row, max_bad_row_share=cfg.data.max_bad_row_share,
                         options=TRAIN_OPTIONS)[: cfg.validation.max_problems]


class Validator:
    def __init__(self, cfg, tokenizer, out: Path, problems: list):
        self.cfg, self.tokenizer, self.out, self.problems = cfg, tokenizer, out, problems
        self.best = float("-inf")
        self.best_step = None

    def due(self, step: int) -> bool:
        every = self.cfg.validation.every
        return bool(every) and ((step + 1) % every == 0 or step + 1 == self.cfg.steps)

    def run(self, accelerator, model, step: int, save_model) -> dict:
        """Evaluate θ after step `step`; keep it in `best/` when it beats every earlier evaluation."""
        v = self.cfg.validation
        sampling = SamplingParams(max_new_tokens=v.max_new_tokens or self.cfg.rollout.max_new_tokens,
                                  temperature=v.temperature, seed=self.cfg.seed)
        mine = self.problems[accelerator.process_index::accelerator.num_processes]
        padding = []
        if is_sharded(model):  # equal generation calls on every process: sharded forwards are collectives
            share = -(-len(self.problems) // accelerator.num_processes)
            padding = [replace(self.problems[0], id=f"{self.problems[0].id}#pad{i}") for i in range(share - len(mine))]
        report = evaluate(model, self.tokenizer, mine + padding, k=v.k, sampling=sampling,
                          prompt_cfg=self.cfg.prompts, progress=False, score_workers=0)
        per_problem = list(report.per_problem_accuracy.values())[:len(mine)]
        if accelerator.num_processes > 1:
            per_problem = gather_object(per_problem)
        accuracy = sum(per_problem) / max(1, len(per_problem))
        improved = accuracy > self.best
        if improved:
            self.best, self.best_step = accuracy, step + 1
            save_model(self.out / "best", {"validation.json": {  # every process: a sharded model is gathered
                "step": self.best_step, "average_at_k": accuracy, "k": v.k, "n_problems": len(per_problem)}})
        return {"eval/val_average_at_k": accuracy, "eval/val_best": self.best, "eval/val_improved": improved}

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state["best"], state["best_step"]
