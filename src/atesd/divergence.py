"""Per-token divergence between the teacher's and the student's next-token distributions.

This is the D in the OPSD objective (OPSD, arXiv 2601.18734; ATESD, arXiv 2605.11458):
L(θ; α) = E_x E_ŷ [ (1/|ŷ|) Σ_n D( p_T^α(·|…ŷ_<n) ‖ p_S(·|…ŷ_<n) ) ]. Everything here is
pure tensor maths on logits that are already in memory; `divergence_chunked.py` computes the same
values from hidden states without ever holding logits for all tokens. Averaging over tokens and
over the batch is the caller's job: every function returns one value per token.

Where this departs from the papers or fills a gap they leave:

1. Generalised JSD(β) uses the mixture m = β·p_T + (1−β)·p_S, and
   JSD_β = β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m). That expression is 0 at both β = 0 and β = 1, so,
   as in GKD (Agarwal et al., arXiv 2306.13649) and TRL, β = 0 is defined as forward KL and β = 1 as
   reverse KL: the two ends of the family are special cases, not limits.
2. The point-wise clip (OPSD v3, τ_clip) is only defined for forward KL. We cap every per-entry term
   of every KL at `clip` before the sum over the vocabulary: for JSD each of the two inner KLs is
   capped term by term before the β weighting. A capped sum can be negative (the cap lowers the
   large positive terms and leaves the negative ones), as in OPSD. A capped term has no gradient.
3. The top-k support (a cheaper alternative peers offer, not in the papers) keeps the teacher's k
   most likely entries plus one tail bucket holding the rest of the mass, for both distributions,
   then applies the chosen divergence (and clip) over those k+1 entries.
4. Values are computed in float32 at least: bf16/fp16 logits are upcast before the softmax.

The gradient w.r.t. the student logits is written out by hand (`row_divergence`) rather than left
to autograd: it keeps fewer [R, V] temporaries alive (about five instead of seven in the chunked
path), and those bound the chunk size. The tests check it against autograd on a plain float64
implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

DivergenceKind = Literal["forward_kl", "reverse_kl", "jsd"]


@dataclass(frozen=True)
class DivergenceSpec:
    """Which divergence to compute, checked once.

    kind: "forward_kl" = KL(p_T ‖ p_S), teacher ‖ student (OPSD default); "reverse_kl" =
        KL(p_S ‖ p_T); "jsd" = generalised JSD(beta) (see the module docstring, point 1).
    jsd_beta: the JSD mixture weight on the teacher, in [0, 1]; ignored by the two KL kinds.
    token_clip: τ_clip; every per-vocabulary-entry term is capped at this value before the sum
        (OPSD v3 uses 0.05 for 1.7B/4B, 0.06 for 8B). None disables the cap.
    temperature: both logits are divided by it before the softmax (OPSD: 1.1).
    top_k: None for the full vocabulary; k for the teacher's top-k entries plus a tail bucket.
    """

    kind: DivergenceKind = "forward_kl"
    jsd_beta: float = 0.5
    token_clip: float | None = None
    temperature: float = 1.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        kinds = get_args(DivergenceKind)
        if self.kind not in kinds:
            raise ValueError(f"kind must be one of {kinds}, got {self.kind!r}")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ValueError(
                f"jsd_beta must be in [0, 1], got {self.jsd_beta} (0 = forward KL, 1 = reverse KL)"
            )
        if self.token_clip is not None and not self.token_clip > 0:
            raise ValueError(f"token_clip must be > 0 or None (no cap), got {self.token_clip}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (full vocabulary), got {self.top_k}")


class RowDivergence(NamedTuple):
    """The result of `row_divergence` for R rows, all detached.

    value: [R] the divergence of each row.
    any_clipped: [R] bool, True where at least one term exceeded the clip.
    grad_logits: [R, V] ∂value_r/∂student_logits_r, or None when not asked for.
    student_logprobs / teacher_logprobs: [R, V] temperature-scaled full-vocabulary log-probs.
    All float tensors are in `compute_dtype` of the student logits.
    """

    value: Tensor
    any_clipped: Tensor
    grad_logits: Tensor | None
    student_logprobs: Tensor
    teacher_logprobs: Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the divergence is computed in: float32, or the input's if wider (float64)."""
    return torch.promote_types(dtype, torch.float32)


def temperature_logprobs(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / temperature) over the last dim, in `compute_dtype`: [R, V] → [R, V]."""
    return torch.log_softmax(logits.to(compute_dtype(logits.dtype)) / temperature, dim=-1)


@torch.no_grad()
def row_divergence(
    student_logprobs: Tensor, teacher_logprobs: Tensor, spec: DivergenceSpec, with_grad: bool
) -> RowDivergence:
    """D(p_T ‖ p_S) of each row, and optionally its gradient w.r.t. the student's raw logits.

    student_logprobs, teacher_logprobs: [R, V], `temperature_logprobs` of the two logits (finite)
    at spec.temperature. Row r's value depends on row r alone, so the gradient is per row:
    grad_logits[r] = ∂value_r/∂z_r where z_r are the student's logits before the temperature.
    Nothing is recorded for autograd; `token_divergence` and `chunked_divergence` wire it in.
    """
    temperature = spec.temperature
    if spec.top_k is None:
        value, any_clipped, grad_support = _divergence_over_support(
            student_logprobs, teacher_logprobs, spec, with_grad
        )
        grad_student_logprobs = grad_support
    else:
        vocab = teacher_logprobs.shape[-1]
        if spec.top_k >= vocab:
            raise ValueError(
                f"top_k={spec.top_k} must be smaller than the vocabulary ({vocab}); "
                "use top_k=None for the full vocabulary"
            )
        top_ids = teacher_logprobs.topk(spec.top_k, dim=-1).indices
        student_support = _topk_with_tail(student_logprobs, top_ids)
        value, any_clipped, grad_support = _divergence_over_support(
            student_support, _topk_with_tail(teacher_logprobs, top_ids), spec, with_grad
        )
        grad_student_logprobs = None
        if with_grad:
            # The tail entry is logsumexp over the non-top entries: its gradient spreads over them
            # in proportion to their share of the tail mass; top entries take their own gradient.
            tail = student_support[:, -1:]
            grad_student_logprobs = (student_logprobs - tail).exp_().mul_(grad_support[:, -1:])
            grad_student_logprobs.scatter_(-1, top_ids, grad_support[:, :-1])
    grad_logits = None
    if with_grad:
        # Back through log_softmax(z / T): ∂/∂z_j = (g_j − p_S(j)·Σ_v g_v) / T.
        total = grad_student_logprobs.sum(dim=-1, keepdim=True)
        grad_logits = student_logprobs.exp().mul_(total).neg_().add_(grad_student_logprobs)
        if temperature != 1.0:
            grad_logits.div_(temperature)
    return RowDivergence(value, any_clipped, grad_logits, student_logprobs, teacher_logprobs)


def token_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: DivergenceKind = "forward_kl",
    jsd_beta: float = 0.5,
    token_clip: float | None = None,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    top_k: int | None = None,
) -> Tensor:
    """D(p_T ‖ p_S) per token, from logits already in memory (the D of OPSD's objective).

    student_logits, teacher_logits: [N, V] or [B, T, V] (same shape; any dtype, computed in
    float32 or wider). mask: [N] or [B, T] bool, True where the token counts.
    Returns [N] or [B, T] in the compute dtype; masked positions are 0 and get no gradient (their
    logits are never read, so padding may hold anything). Gradients flow to `student_logits` only.
    See `DivergenceSpec` for kind, jsd_beta, token_clip, temperature and top_k. The forward keeps the
    [N, V] gradient for the backward: for long rollouts with a large vocabulary use
    `chunked_divergence`.
    """
    spec = DivergenceSpec(kind=kind, jsd_beta=jsd_beta, token_clip=token_clip, temperature=temperature, top_k=top_k)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() not in (2, 3):
        raise ValueError(
            "student_logits and teacher_logits must share a shape [N, V] or [B, T, V], got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    leading = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    student_rows = student_logits.reshape(-1, vocab)
    teacher_rows = teacher_logits.reshape(-1, vocab).detach()
    if mask is not None:
        if mask.shape != leading or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(leading)}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        active = mask.reshape(-1).nonzero().squeeze(1)
        student_rows, teacher_rows = student_rows[active], teacher_rows[active]
    if torch.is_grad_enabled() and student_rows.requires_grad:
        values = _TokenDivergenceFunction.apply(student_rows, teacher_rows, spec)
    else:
        values = row_divergence(temperature_logprobs(student_rows, temperature),
                                temperature_logprobs(teacher_rows, temperature), spec,
                                with_grad=False).value
    if mask is None:
        return values.reshape(leading)
    return values.new_zeros(mask.numel()).index_copy(0, active, values).reshape(leading)


class _TokenDivergenceFunction(torch.autograd.Function):
    """Per-row divergence; the forward keeps ∂value_r/∂logits_r, the backward scales it by g_r."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, spec):
        row = row_divergence(temperature_logprobs(student_logits.detach(), spec.temperature),
                             temperature_logprobs(teacher_logits, spec.temperature), spec,
                             with_grad=True)
        ctx.save_for_backward(row.grad_logits)
        ctx.logits_dtype = student_logits.dtype
        return row.value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values):
        (grad_logits,) = ctx.saved_tensors
        grad = grad_logits * grad_values.to(grad_logits.dtype)[:, None]
        return grad.to(ctx.logits_dtype), None, None


def sampled_token_loss(
    student_logprobs_of_sampled: Tensor,
    teacher_logprobs_of_sampled: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """Sampled-token (policy-gradient) form of reverse KL, per token.

    student_logprobs_of_sampled, teacher_logprobs_of_sampled: [N] or [B, T], log p_S(ŷ_n) and
    log p_T(ŷ_n) of the token the student sampled (at the sampling temperature), the student's
    differentiable. mask: same shape, bool.

    loss_n = −sg(log p_T(ŷ_n) − log p_S(ŷ_n)) · log p_S(ŷ_n): the advantage
    sg(log p_T − log p_S) is a stop-gradient, so the gradient is −A·∇log p_S(ŷ_n), whose
    expectation over ŷ_n ~ p_S is ∇KL(p_S ‖ p_T) (the form slime and tinker-cookbook fold
    into the advantage). The value itself is not a divergence; for a metric
    use log p_S(ŷ_n) − log p_T(ŷ_n), the per-token estimate of reverse KL. Masked positions
    give 0 and no gradient.
    """
    if student_logprobs_of_sampled.shape != teacher_logprobs_of_sampled.shape:
        raise ValueError(
            "student and teacher log-probs must share a shape, got "
            f"{tuple(student_logprobs_of_sampled.shape)} and "
            f"{tuple(teacher_logprobs_of_sampled.shape)}"
        )
    dtype = compute_dtype(student_logprobs_of_sampled.dtype)
    student = student_logprobs_of_sampled.to(dtype)
    teacher = teacher_logprobs_of_sampled.detach().to(dtype)
    if mask is not None:
        if mask.shape != student.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(student.shape)}")
        # Zero the inputs first: padding may hold -inf, and inf * 0 would leak NaN gradients.
        student = torch.where(mask, student, 0.0)
        teacher = torch.where(mask, teacher, 0.0)
    advantage = teacher - student.detach()
    return -advantage * student


def _topk_with_tail(logprobs: Tensor, top_ids: Tensor) -> Tensor:
    """[R, V] log-probs → [R, k+1]: the entries at top_ids [R, k], then log of the rest's mass."""
    top = logprobs.gather(-1, top_ids)
    # logsumexp over the remaining entries is exact where log(1 − Σ top) would cancel.
    tail = logprobs.scatter(-1, top_ids, -math.inf).logsumexp(dim=-1, keepdim=True)
    return torch.cat([top, tail], dim=-1)


def _divergence_over_support(
    student_logprobs: Tensor, teacher_logprobs: Tensor, spec: DivergenceSpec, with_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Over a common support of S entries, log-probs a = log p_S, b = log p_T [R, S] →
    ([R] value, [R] any-clipped, [R, S] ∂value/∂a or None).

    With term_v the per-entry KL term and active_v = (term_v <= clip):
      forward KL  term = p_T (b − a)             ∂/∂a_v = −p_T·active
      reverse KL  term = p_S (a − b)             ∂/∂a_v = (term + p_S)·active
      JSD(β)      log m = logaddexp(b + log β, a + log(1−β)), r = (1−β) p_S / m = ∂log m/∂a,
                  β·KL(p_T‖m) + (1−β)·KL(p_S‖m): ∂/∂a_v = −β p_T r·active_T
                                                          + (1−β)(term_S + p_S (1 − r))·active_S
    """
    a, b = student_logprobs, teacher_logprobs
    forward = spec.kind == "forward_kl" or (spec.kind == "jsd" and spec.jsd_beta == 0.0)
    reverse = spec.kind == "reverse_kl" or (spec.kind == "jsd" and spec.jsd_beta == 1.0)
    if forward:
        p_t = b.exp()
        terms = (b - a).mul_(p_t)
        value, any_clipped, active = _capped_sum(terms, spec.token_clip)
        grad = _masked(p_t.neg_(), active) if with_grad else None
        return value, any_clipped, grad
    if reverse:
        p_s = a.exp()
        terms = (a - b).mul_(p_s)
        value, any_clipped, active = _capped_sum(terms, spec.token_clip)
        grad = _masked(terms.add_(p_s), active) if with_grad else None
        return value, any_clipped, grad
    beta = spec.jsd_beta
    log_mixture = torch.logaddexp(b + math.log(beta), a + math.log1p(-beta))
    p_t, p_s = b.exp(), a.exp()
    # The teacher's terms are not needed for the gradient: let them go right after the sum.
    teacher_value, teacher_clipped, teacher_active = _capped_sum(
        (b - log_mixture).mul_(p_t), spec.token_clip
    )
    student_terms = (a - log_mixture).mul_(p_s)
    student_value, student_clipped, student_active = _capped_sum(student_terms, spec.token_clip)
    value = beta * teacher_value + (1.0 - beta) * student_value
    grad = None
    if with_grad:
        share = (a - log_mixture).add_(math.log1p(-beta)).exp_()  # r = (1−β) p_S / m
        del log_mixture
        from_teacher = _masked(p_t.mul_(share).mul_(-beta), teacher_active)
        from_student = student_terms.add_(p_s.mul_(share.neg_().add_(1.0))).mul_(1.0 - beta)
        grad = from_teacher.add_(_masked(from_student, student_active))
    return value, teacher_clipped | student_clipped, grad


def _capped_sum(terms: Tensor, clip: float | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Σ_v min(term_v, clip) over the last dim, any term clipped, and the uncapped mask (or None).

    Caps `terms` in place: the gradients above read a term only where it is not capped.
    """
    if clip is None:
        return terms.sum(dim=-1), terms.new_zeros(terms.shape[:-1], dtype=torch.bool), None
    active = terms <= clip
    return terms.clamp_(max=clip).sum(dim=-1), ~active.all(dim=-1), active


def _masked(grad: Tensor, active: Tensor | None) -> Tensor:
    """Zero the gradient of capped terms, in place."""
    return grad if active is None else grad.mul_(active)
