"""One optimizer step, summarised: the typed record the loop logs and hands to the exposure policy.

`summarize_step` gathers the objectives' `LossStats` (per-token tensors, micro-batch by micro-batch)
and the rollouts over every process and reduces them to a `StepSummary` of plain floats. The loop
writes `summary.metrics()` to metrics.jsonl (names of docs/algorithm.md) and builds the controller's
`TrainingSignals` from the summary itself (`atesd.exposure.signals_from`), never from the log dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from accelerate.utils import gather_object

from atesd.loops import ends_in_loop
from atesd.objectives import LossStats


def _gather(accelerator, values: list) -> list:
    if accelerator.num_processes == 1:
        return list(values)
    return list(gather_object(list(values)))


def _mean(xs) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else 0.0


def _quantile(xs, q: float) -> float:
    return float(torch.quantile(torch.tensor(xs, dtype=torch.float64), q)) if len(xs) else 0.0


@dataclass(frozen=True)
class StepSummary:
    """Global (all processes) statistics of step t; None where the step did not measure it.

    loss: the objective's loss, mean over processes. divergence_*: the per-token loss term over the
    counted tokens (mean, p95, p99) and token-weighted over correct / incorrect rollouts.
    top1_disagreement, student_entropy, teacher_entropy, clip_fraction: token means (full-vocabulary
    divergences only). rollout_accuracy: share of rollouts with a verified-correct answer.
    self_confidence: mean log-prob of the sampled tokens under the sampling distribution (None
    without rollouts, e.g. SFT). truncated: share of rollouts that hit max_new_tokens. loop_rate:
    share of rollouts whose completion ids end in a repetition loop (`atesd.loops`).
    zero_advantage_groups, group_reward_std: with G ≥ 2 rollouts per prompt (GRPO), the share of
    groups whose G verified rewards are all equal (their group-normalised advantage is 0: no
    gradient) and the mean over groups of the rewards' standard deviation (None when G = 1).
    """

    loss: float
    divergence_mean: float
    divergence_p95: float
    divergence_p99: float
    divergence_correct: float | None
    divergence_incorrect: float | None
    top1_disagreement: float | None
    student_entropy: float | None
    teacher_entropy: float | None
    clip_fraction: float | None
    rollout_accuracy: float
    completion_length: float
    tokens: int
    self_confidence: float | None
    truncated: float | None
    loop_rate: float | None = None
    zero_advantage_groups: float | None = None
    group_reward_std: float | None = None

    def metrics(self) -> dict:
        """The metrics.jsonl entries of this summary (None-valued optional ones left out)."""
        out = {
            "train/loss": self.loss,
            "train/divergence_mean": self.divergence_mean,
            "train/divergence_p95": self.divergence_p95,
            "train/divergence_p99": self.divergence_p99,
            "train/divergence_correct": self.divergence_correct,
            "train/divergence_incorrect": self.divergence_incorrect,
            "rollout/accuracy": self.rollout_accuracy,
            "rollout/completion_length": self.completion_length,
            "rollout/tokens": self.tokens,
        }
        optional = {"train/top1_disagreement": self.top1_disagreement, "train/clip_fraction": self.clip_fraction,
                    "train/student_entropy": self.student_entropy, "train/teacher_entropy": self.teacher_entropy,
                    "rollout/self_confidence": self.self_confidence, "rollout/truncated": self.truncated,
                    "rollout/loop_rate": self.loop_rate, "rollout/zero_advantage_groups": self.zero_advantage_groups,
                    "rollout/group_reward_std": self.group_reward_std}
        return {**out, **{k: v for k, v in optional.items() if v is not None}}


def summarize_step(accelerator, loss_sum: torch.Tensor, stats: Sequence[LossStats], rollouts, correct: Sequence[bool],
                   completions: Sequence[Sequence[int]], group_size: int = 1) -> StepSummary:
    """The StepSummary of one step from this process's micro-batch stats, rollouts (None when the
    objective samples none) and verified answers, whose groups of `group_size` rollouts of one prompt
    are contiguous on each process; every process must call it (it gathers)."""
    counted = [value for s in stats for value in s.per_token[s.mask].tolist()]
    tokens = _gather(accelerator, counted)
    per_rollout = _gather(accelerator, [v for s in stats for v in s.per_rollout().tolist()])
    lengths = _gather(accelerator, [len(c) for c in completions])
    correct_all = _gather(accelerator, [bool(c) for c in correct])

    def by_correctness(want: bool) -> float | None:
        pairs = [(d, n) for d, n, c in zip(per_rollout, lengths, correct_all) if c == want]
        n_tokens = sum(n for _, n in pairs)
        return sum(d * n for d, n in pairs) / n_tokens if n_tokens else None

    def token_mean(name: str) -> float | None:
        if any(getattr(s, name) is None for s in stats) or not stats:
            return None
        return _mean(_gather(accelerator, [v for s in stats for v in getattr(s, name)[s.mask].tolist()]))

    self_confidence = truncated = loop_rate = None
    if rollouts is not None:
        self_confidence = _mean(_gather(accelerator, [lp for r in rollouts for lp in r.logprobs]))
        truncated = _mean(_gather(accelerator, [r.truncated for r in rollouts]))
        loop_rate = _mean(_gather(accelerator, [ends_in_loop(r.completion_ids) for r in rollouts]))
    zero_advantage_groups = group_reward_std = None
    if rollouts is not None and group_size > 1:
        groups = [correct_all[i:i + group_size] for i in range(0, len(correct_all), group_size)]
        zero_advantage_groups = _mean([float(len(set(g)) == 1) for g in groups])
        group_reward_std = _mean([float(torch.tensor(g, dtype=torch.float64).std(unbiased=False)) for g in groups])
    return StepSummary(
        loss=accelerator.reduce(loss_sum.detach().float().reshape(1), "mean").item(),
        divergence_mean=_mean(tokens), divergence_p95=_quantile(tokens, 0.95), divergence_p99=_quantile(tokens, 0.99),
        divergence_correct=by_correctness(True), divergence_incorrect=by_correctness(False),
        top1_disagreement=token_mean("top1_disagreement"), student_entropy=token_mean("student_entropy"),
        teacher_entropy=token_mean("teacher_entropy"), clip_fraction=token_mean("clip_fraction"),
        rollout_accuracy=_mean(correct_all), completion_length=_mean(lengths), tokens=int(sum(lengths)),
        self_confidence=self_confidence, truncated=truncated, loop_rate=loop_rate,
        zero_advantage_groups=zero_advantage_groups, group_reward_std=group_reward_std,
    )
