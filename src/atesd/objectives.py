"""What the student is trained on, as small strategy objects the one loop calls.

- `Distill`: OPSD's objective, L = E_x E_ŷ (1/|ŷ|) Σ_n D(p_T^α(·|x, ỹ*_α, ŷ_<n) ‖ p_S(·|x, ŷ_<n))
  (OPSD, arXiv 2601.18734, eq. for the full-vocabulary divergence; ATESD's α sets ỹ*_α), or its
  sampled-token form.
- `Supervised`: SFT on the reference solutions, L = −E_x (1/|y*|) Σ_n log p_S(y*_n | x, y*_<n).
- `GroupRelative`: GRPO with the verified answer as reward, group-normalised advantages
  A_i = (r_i − mean_G r)/(std_G r + ε), optional k3 KL to the frozen initial policy (Shao et al. 2024).

Every objective returns the loss summed over its micro-batch's rollouts, each rollout's token mean
weighted by `1 / rollouts_per_process`, so the optimizer step does not depend on how the batch is
split into micro-batches (the loop checks that invariant in its tests).

Departures: 1. GRPO uses each batch for one update, so the importance ratio is 1 and its clip never
binds (kept in the formula for when rollouts are reused). 2. The sampled-token divergence uses the
student's log-probs recomputed in training, not the sampler's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from atesd.config import LossConfig
from atesd.divergence import compute_dtype, sampled_token_loss
from atesd.divergence_chunked import chunked_divergence
from atesd.teacher import SequenceBatch, Teacher, check_same_completions, completion_hidden


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor,
                   temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """log p(ids_n) from hidden [N, H] and head weight [V, H], chunk by chunk: [N].

    Each chunk is recomputed in the backward (activation checkpointing), so at most
    [chunk_size, V] logits are alive at once.
    """

    def chunk_logprobs(h, w, t):
        logits = h @ w.t()
        logits = logits.to(compute_dtype(logits.dtype)) / temperature
        return logits.gather(-1, t[:, None]).squeeze(-1) - logits.logsumexp(-1)

    parts = []
    for start in range(0, hidden.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        if hidden.requires_grad or weight.requires_grad:
            parts.append(checkpoint(chunk_logprobs, hidden[sl], weight, ids[sl], use_reentrant=False))
        else:
            parts.append(chunk_logprobs(hidden[sl], weight, ids[sl]))
    return torch.cat(parts) if parts else hidden.new_zeros(0)


def per_rollout_weights(batch: SequenceBatch, rollouts_per_process: int, skip_first: int = 0) -> torch.Tensor:
    """[N] weight of each token in the loss: 1 / (|ŷ_i| · rollouts_per_process), 0 on skipped tokens."""
    weights, mask = [], []
    for length in batch.completion_lengths:
        kept = max(length - skip_first, 0)
        w = 1.0 / (max(kept, 1) * rollouts_per_process)
        weights.extend([0.0] * min(skip_first, length) + [w] * kept)
    return torch.tensor(weights, device=batch.target_ids.device)


@dataclass(frozen=True)
class StepViews:
    """One micro-batch as the objectives see it.

    student: student prompt + completion; teacher: teacher prompt (at the step's reveal ratio) +
    the same completion (None for SFT); rewards: [B] verified-answer rewards (GRPO);
    group_size: rollouts per prompt.
    """

    student: SequenceBatch
    teacher: SequenceBatch | None = None
    rewards: torch.Tensor | None = None
    group_size: int = 1


def _token_mean_by_rollout(values: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    n = len(batch.completion_lengths)
    sums = values.new_zeros(n).index_add_(0, batch.token_rollout, values)
    lengths = torch.tensor(batch.completion_lengths, device=values.device, dtype=values.dtype).clamp(min=1)
    return sums / lengths


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.float(), q)) if values.numel() else 0.0


class Distill:
    """Self-distillation toward the teacher's next-token distributions."""

    needs_rollouts = True
    needs_teacher_view = True

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def loss(self, policy, head, teacher: Teacher, unwrapped, views: StepViews, rollouts_per_process: int):
        cfg = self.cfg
        check_same_completions(views.student, views.teacher)
        weights = per_rollout_weights(views.student, rollouts_per_process, cfg.skip_first_tokens)
        mask = weights > 0
        student_hidden = completion_hidden(policy, views.student)
        teacher_hidden = teacher.hidden(unwrapped, views.teacher)
        teacher_head = teacher.head_weight(unwrapped)
        if cfg.divergence == "sampled_token":
            ids = views.student.target_ids
            student_lp = token_logprobs(student_hidden, head.weight, ids, cfg.temperature, cfg.chunk_size)
            with torch.no_grad():
                teacher_lp = token_logprobs(teacher_hidden, teacher_head, ids, cfg.temperature, cfg.chunk_size)
            loss = (sampled_token_loss(student_lp, teacher_lp, mask) * weights).sum()
            per_token = (student_lp.detach() - teacher_lp) * mask  # reverse-KL estimate, for metrics
            return loss, self._stats(per_token, mask, views.student, None)
        out = chunked_divergence(
            student_hidden,
            teacher_hidden,
            head.weight,
            kind=cfg.divergence,
            beta=cfg.jsd_beta,
            clip=cfg.token_clip,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            mask=mask,
            chunk_size=cfg.chunk_size,
            teacher_lm_head_weight=None if teacher_head is head.weight else teacher_head,
            token_weights=weights,
        )
        loss = (out.divergence * weights).sum()
        return loss, self._stats(out.divergence.detach(), mask, views.student, out)

    @staticmethod
    def _stats(per_token, mask, batch: SequenceBatch, out) -> dict:
        kept = per_token[mask]
        stats = {
            "per_rollout_divergence": _token_mean_by_rollout(per_token, batch).tolist(),
            "divergence_tokens": kept.tolist(),
        }
        if out is not None:
            stats["top1_disagreement"] = (1.0 - out.top1_agree[mask].float()).tolist()
            stats["student_entropy"] = out.student_entropy[mask].tolist()
            stats["teacher_entropy"] = out.teacher_entropy[mask].tolist()
            stats["clip_fraction"] = out.clip_fraction[mask].tolist()
        return stats


class Supervised:
    """SFT: cross-entropy on the reference solution after the student prompt."""

    needs_rollouts = False
    needs_teacher_view = False

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def loss(self, policy, head, teacher, unwrapped, views: StepViews, rollouts_per_process: int):
        weights = per_rollout_weights(views.student, rollouts_per_process)
        hidden = completion_hidden(policy, views.student)
        logp = token_logprobs(hidden, head.weight, views.student.target_ids, 1.0, self.cfg.chunk_size)
        nll = -logp
        loss = (nll * weights).sum()
        return loss, {"per_rollout_divergence": _token_mean_by_rollout(nll.detach(), views.student).tolist(),
                      "divergence_tokens": nll.detach().tolist()}


class GroupRelative:
    """GRPO: maximise group-normalised verified reward; optional KL to the initial policy."""

    needs_rollouts = True
    needs_teacher_view = False

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg
        self.kl_coef = cfg.grpo_kl_coef
        self.clip_eps = cfg.grpo_clip_eps

    def loss(self, policy, head, teacher: Teacher, unwrapped, views: StepViews, rollouts_per_process: int):
        batch = views.student
        rewards = views.rewards.view(-1, views.group_size)
        advantages = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True, unbiased=False) + 1e-4)).view(-1)
        weights = per_rollout_weights(batch, rollouts_per_process)
        hidden = completion_hidden(policy, batch)
        logp = token_logprobs(hidden, head.weight, batch.target_ids, self.cfg.temperature, self.cfg.chunk_size)
        ratio = torch.exp(logp - logp.detach())
        adv = advantages[batch.token_rollout]
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - self.clip_eps, 1 + self.clip_eps) * adv)
        per_token = -surrogate
        if self.kl_coef > 0:
            with torch.no_grad():
                ref = token_logprobs(teacher.hidden(unwrapped, batch), teacher.head_weight(unwrapped),
                                     batch.target_ids, self.cfg.temperature, self.cfg.chunk_size)
            delta = ref - logp
            per_token = per_token + self.kl_coef * (torch.exp(delta) - delta - 1)
        loss = (per_token * weights).sum()
        return loss, {"per_rollout_divergence": _token_mean_by_rollout(per_token.detach(), batch).tolist(),
                      "divergence_tokens": per_token.detach().tolist()}


def make_objective(cfg: LossConfig):
    """The one place `loss.objective` is dispatched."""
    if cfg.objective == "distill":
        return Distill(cfg)
    if cfg.objective == "sft":
        return Supervised(cfg)
    return GroupRelative(cfg)
