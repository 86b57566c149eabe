"""What the student is trained on, as small strategy objects the one loop calls.

- `Distill`: OPSD's objective, L = E_x E_ŷ (1/|ŷ|) Σ_n D(p_T^α(·|x, ỹ*_α, ŷ_<n) ‖ p_S(·|x, ŷ_<n))
  (OPSD, arXiv 2601.18734, eq. for the full-vocabulary divergence; ATESD's α sets ỹ*_α), or its
  sampled-token form.
- `Supervised`: SFT on the reference solutions, L = −E_x (1/|y*|) Σ_n log p_S(y*_n | x, y*_<n).
- `GroupRelative`: GRPO with the verified answer as reward, group-normalised advantages
  A_i = (r_i − mean_G r)/(std_G r + ε), optional k3 KL to the frozen initial policy (Shao et al. 2024).

Every objective's `loss(policy, head, teacher, unwrapped, views, rollouts_per_process)` runs its
model forwards, then everything that reads the output head's weight inside `head(fn, *inputs)`
(`atesd.distributed.through_head` on the unwrapped model: under FSDP2 or ZeRO-3 the module's own
weight is a shard, and `fn` gets the full one), and returns the loss summed over its micro-batch's
rollouts, each rollout's token mean
weighted by `1 / rollouts_per_process`, so the optimizer step does not depend on how the batch is
split into micro-batches (the loop checks that invariant in its tests), and a `LossStats` of
detached per-token tensors, from which the loop builds its metrics and the exposure controller's
signals (`atesd.metrics`).

Departures: 1. GRPO uses each batch for one update, so the importance ratio is 1 and its clip never
binds (kept in the formula for when rollouts are reused). 2. The sampled-token divergence uses the
student's log-probs recomputed in training, not the sampler's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from atesd.config import LossConfig
from atesd.divergence import sampled_token_loss
from atesd.divergence_chunked import DivergenceOutput, chunked_divergence
from atesd.scoring import SequenceBatch, check_same_completions, completion_hidden, token_logprobs
from atesd.teacher import Teacher


@dataclass(frozen=True)
class LossStats:
    """What one micro-batch's objective measured; detached tensors on the compute device.

    per_token [N]: the per-token loss term (the divergence D for distillation, the NLL for SFT, the
        GRPO surrogate plus its KL term), over the N completion tokens; 0 where not counted.
    mask [N] bool: the tokens counted in the loss (all but `loss.skip_first_tokens`).
    token_rollout [N], completion_lengths: which rollout each token belongs to, rollout lengths.
    top1_disagreement, student_entropy, teacher_entropy, clip_fraction [N]: per token, from the
        full-vocabulary divergence only (None for the sampled-token divergence, SFT and GRPO).
    """

    per_token: torch.Tensor
    mask: torch.Tensor
    token_rollout: torch.Tensor
    completion_lengths: tuple[int, ...]
    top1_disagreement: torch.Tensor | None = None
    student_entropy: torch.Tensor | None = None
    teacher_entropy: torch.Tensor | None = None
    clip_fraction: torch.Tensor | None = None

    @classmethod
    def of(cls, per_token: torch.Tensor, mask: torch.Tensor, batch: SequenceBatch, out=None) -> LossStats:
        """From per-token values on `batch` (and a `DivergenceOutput` for the divergence's extras)."""
        extras = {}
        if out is not None:
            extras = dict(top1_disagreement=(~out.top1_agree).float(), student_entropy=out.student_entropy,
                          teacher_entropy=out.teacher_entropy, clip_fraction=out.clip_fraction)
        return cls(per_token.detach(), mask, batch.token_rollout, batch.completion_lengths, **extras)

    def per_rollout(self) -> torch.Tensor:
        """[B] each rollout's mean of per_token over its completion tokens."""
        sums = self.per_token.new_zeros(len(self.completion_lengths)).index_add_(0, self.token_rollout, self.per_token)
        lengths = torch.tensor(self.completion_lengths, device=sums.device, dtype=sums.dtype).clamp(min=1)
        return sums / lengths


def per_rollout_weights(batch: SequenceBatch, rollouts_per_process: int, skip_first: int = 0) -> torch.Tensor:
    """[N] weight of each token in the loss: 1 / (|ŷ_i| · rollouts_per_process), 0 on skipped tokens."""
    weights = []
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
        if cfg.divergence == "sampled_token":
            ids = views.student.target_ids

            def sampled_logprobs(weight, student_hidden, teacher_hidden):
                student_lp = token_logprobs(student_hidden, weight, ids, cfg.temperature, cfg.chunk_size)
                with torch.no_grad():
                    teacher_lp = token_logprobs(teacher_hidden, teacher.head_weight(unwrapped, weight), ids,
                                                cfg.temperature, cfg.chunk_size)
                return student_lp, teacher_lp

            student_lp, teacher_lp = head(sampled_logprobs, student_hidden, teacher_hidden)
            loss = (sampled_token_loss(student_lp, teacher_lp, mask) * weights).sum()
            per_token = (student_lp.detach() - teacher_lp) * mask  # reverse-KL estimate, for metrics
            return loss, LossStats.of(per_token, mask, views.student)

        def divergence(weight, student_hidden, teacher_hidden):
            teacher_head = teacher.head_weight(unwrapped, weight)
            out = chunked_divergence(
                student_hidden,
                teacher_hidden,
                weight,
                kind=cfg.divergence,
                jsd_beta=cfg.jsd_beta,
                token_clip=cfg.token_clip,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                mask=mask,
                chunk_size=cfg.chunk_size,
                teacher_lm_head_weight=None if teacher_head is weight else teacher_head,
                token_weights=weights,
                float32_logits=float32_logits(cfg),
            )
            return tuple(getattr(out, f.name) for f in fields(out))

        out = DivergenceOutput(*head(divergence, student_hidden, teacher_hidden))
        loss = (out.divergence * weights).sum()
        return loss, LossStats.of(out.divergence, mask, views.student, out)


class Supervised:
    """SFT: cross-entropy on the reference solution after the student prompt."""

    needs_rollouts = False
    needs_teacher_view = False

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    def loss(self, policy, head, teacher, unwrapped, views: StepViews, rollouts_per_process: int):
        weights = per_rollout_weights(views.student, rollouts_per_process)
        hidden = completion_hidden(policy, views.student)
        ids, chunk = views.student.target_ids, self.cfg.chunk_size
        logp = head(lambda weight, hidden: token_logprobs(hidden, weight, ids, 1.0, chunk), hidden)
        nll = -logp
        loss = (nll * weights).sum()
        return loss, LossStats.of(nll, weights > 0, views.student)


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
        advantages = group_advantages(views.rewards, views.group_size)
        weights = per_rollout_weights(batch, rollouts_per_process)
        hidden = completion_hidden(policy, batch)
        reference = None
        if self.kl_coef > 0:
            with torch.no_grad():
                reference = teacher.hidden(unwrapped, batch)
        ids, temperature, chunk = batch.target_ids, self.cfg.temperature, self.cfg.chunk_size

        def logprobs(weight, hidden, *reference_hidden):
            logp = token_logprobs(hidden, weight, ids, temperature, chunk)
            if not reference_hidden:
                return logp
            with torch.no_grad():
                ref = token_logprobs(reference_hidden[0], teacher.head_weight(unwrapped, weight), ids, temperature, chunk)
            return logp, ref

        if reference is None:
            logp = head(logprobs, hidden)
        else:
            logp, ref = head(logprobs, hidden, reference)
        importance_ratio = torch.exp(logp - logp.detach())
        adv = advantages[batch.token_rollout]
        surrogate = torch.minimum(importance_ratio * adv,
                                  importance_ratio.clamp(1 - self.clip_eps, 1 + self.clip_eps) * adv)
        per_token = -surrogate
        if reference is not None:
            delta = ref - logp
            per_token = per_token + self.kl_coef * (torch.exp(delta) - delta - 1)
        loss = (per_token * weights).sum()
        return loss, LossStats.of(per_token, weights > 0, batch)


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B] GRPO's advantages A_i = (r_i − mean_G r)/(std_G r + ε) of rewards [B] whose consecutive runs of
    `group_size` are the rollouts of one prompt (std over the group, not unbiased; ε = 1e-4): a group
    whose rewards are all equal gets A = 0 (Shao et al. 2024, eq. for outcome supervision)."""
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    return (centred / (grouped.std(1, keepdim=True, unbiased=False) + 1e-4)).view(-1)


def float32_logits(cfg: LossConfig) -> bool:
    """`loss.float32_logits`, with null meaning: on when a point-wise clip is set (it only changes
    anything for bf16/fp16 weights; see `atesd.divergence_chunked`, "Logit precision")."""
    return cfg.token_clip is not None if cfg.float32_logits is None else cfg.float32_logits


def make_objective(cfg: LossConfig):
    """The one place `loss.objective` is dispatched."""
    if cfg.objective == "distill":
        return Distill(cfg)
    if cfg.objective == "sft":
        return Supervised(cfg)
    return GroupRelative(cfg)
