"""Per-step measurements: the logged metrics and the exposure controller's extra signals.

`step_metrics` turns one step's rollouts and loss statistics into the metric dict written to
metrics.jsonl (global over processes). `ExposureProbe` measures what only the learned exposure
policy needs: the probe NLL (the student's NLL of reference solutions on a fixed probe set from the
training split) and the grounding score g_t (the mean log-probability that the teacher at the
current α gives the withheld reference steps and the answer, teacher-forced), one batched no-grad
forward each.
"""

from __future__ import annotations

import time

import torch
from accelerate.utils import gather_object

from atesd.exposure import TrainingSignals
from atesd.objectives import token_logprobs
from atesd.prompts import reference_completion, student_prompt, teacher_prompt
from atesd.reveal import reveal, withheld
from atesd.teacher import build_sequences, completion_hidden


def _gather(accelerator, values: list) -> list:
    if accelerator.num_processes == 1:
        return list(values)
    return list(gather_object(list(values)))


def _mean(xs) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else 0.0


def _quantile(xs, q: float) -> float:
    return float(torch.quantile(torch.tensor(xs, dtype=torch.float64), q)) if len(xs) else 0.0


def step_metrics(accelerator, step, ratio, loss_sum, stats, rollouts, correct, completions) -> dict:
    """Global metrics of one optimizer step; names are those of docs/algorithm.md."""
    merged: dict[str, list] = {}
    for micro in stats:
        for key, values in micro.items():
            merged.setdefault(key, []).extend(values)
    tokens = _gather(accelerator, merged.get("divergence_tokens", []))
    per_rollout = _gather(accelerator, merged.get("per_rollout_divergence", []))
    lengths = _gather(accelerator, [len(c) for c in completions])
    correct_all = _gather(accelerator, [bool(c) for c in correct])
    loss = accelerator.reduce(loss_sum.detach().float().reshape(1), "mean").item()
    metrics = {
        "step": step,
        "train/loss": loss,
        "train/divergence_mean": _mean(tokens),
        "train/divergence_p95": _quantile(tokens, 0.95),
        "train/divergence_p99": _quantile(tokens, 0.99),
        "exposure/reveal_ratio": ratio,
        "rollout/accuracy": _mean(correct_all),
        "rollout/completion_length": _mean(lengths),
        "rollout/tokens": int(sum(lengths)),
    }
    for name, want in (("correct", True), ("incorrect", False)):
        pairs = [(d, n) for d, n, c in zip(per_rollout, lengths, correct_all) if c == want]
        n_tokens = sum(n for _, n in pairs)
        metrics[f"train/divergence_{name}"] = sum(d * n for d, n in pairs) / n_tokens if n_tokens else None
    for key in ("top1_disagreement", "clip_fraction", "student_entropy", "teacher_entropy"):
        if key in merged:
            metrics[f"train/{key}"] = _mean(_gather(accelerator, merged[key]))
    if rollouts is not None:
        logprobs = _gather(accelerator, [lp for r in rollouts for lp in r.logprobs])
        metrics["rollout/self_confidence"] = _mean(logprobs)
        metrics["rollout/truncated"] = _mean(_gather(accelerator, [r.truncated for r in rollouts]))
    return metrics


class ExposureProbe:
    """Probe NLL and grounding score g_t for the learned exposure policy."""

    def __init__(self, cfg, problems, tokenizer, probe_nll: bool, grounding: bool):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.want_probe_nll, self.want_grounding = probe_nll, grounding
        # The probe NLL is a state feature read at decisions (every hold_steps steps); as the
        # progress signal ℓ_t it is needed every step.
        exposure = cfg.exposure
        self.probe_every = 1 if exposure.progress_signal == "probe_nll" else exposure.hold_steps
        order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(cfg.seed + 7))
        self.probe = [problems[int(i)] for i in order[: cfg.exposure.probe_size]]
        self.grounding = [problems[int(i)] for i in order[cfg.exposure.probe_size: 2 * cfg.exposure.probe_size]]
        if not self.grounding:
            self.grounding = self.probe

    def _mean_logprob(self, model, prompts, texts, device) -> float:
        completions = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        batch = build_sequences(prompts, completions, self.tokenizer.pad_token_id, device)
        hidden = completion_hidden(model, batch)
        head = model.get_output_embeddings().weight
        return float(token_logprobs(hidden, head, batch.target_ids, 1.0, self.cfg.loss.chunk_size).mean())

    @torch.no_grad()
    def measure(self, accelerator, unwrapped, teacher, ratio: float, step: int) -> dict:
        """Measured on θ_t, before step t's update; the same on every rank (all take part, so sharded
        models work)."""
        metrics = {}
        tok, prompts_cfg, device = self.tokenizer, self.cfg.prompts, accelerator.device
        t0 = time.perf_counter()
        if self.want_probe_nll and (step + 1) % self.probe_every == 0:
            metrics["exposure/probe_nll"] = -self._mean_logprob(
                unwrapped,
                [student_prompt(tok, p.problem, prompts_cfg) for p in self.probe],
                [reference_completion(p.solution, tok) for p in self.probe],
                device,
            )
            metrics["timing/probe_s"] = time.perf_counter() - t0
        if self.want_grounding:
            t1 = time.perf_counter()
            with teacher.context(unwrapped):
                metrics["exposure/grounding_score"] = self._mean_logprob(
                    teacher.model(unwrapped),
                    [teacher_prompt(tok, p.problem, reveal(p.solution, ratio), prompts_cfg) for p in self.grounding],
                    [reference_completion(withheld(p.solution, ratio), tok) for p in self.grounding],
                    device,
                )
            metrics["timing/grounding_s"] = time.perf_counter() - t1
        return metrics


def exposure_signals(metrics: dict) -> TrainingSignals:
    """The controller's view of one step (ATESD section 4 state inputs), from the logged metrics."""
    return TrainingSignals(
        distill_loss=float(metrics["train/loss"]),
        kl_mean=float(metrics["train/divergence_mean"]),
        top1_disagreement=float(metrics.get("train/top1_disagreement", 0.0)),
        probe_nll=metrics.get("exposure/probe_nll"),
        self_confidence=float(metrics.get("rollout/self_confidence", 0.0)),
        grounding_score=metrics.get("exposure/grounding_score"),
    )
