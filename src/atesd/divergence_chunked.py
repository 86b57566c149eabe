"""The OPSD divergence computed from hidden states, chunk by chunk, never holding [N, V] logits.

With Qwen3's 151,936-entry vocabulary, full logits for both passes dominate memory (the OPSD
reference code ran out of memory on a 4096-token rollout at batch 4). `chunked_divergence` takes the
student's and the teacher's final hidden states for the scored (completion) tokens and the lm_head
weight, and walks over the tokens `chunk_size` at a time: logits exist for one chunk only, in the
forward and in the backward. The maths per token is `divergence.row_divergence`, so values equal
`token_divergence` on the full logits.

How the gradient is handled (the "gradient in the forward" idea of Liger-Kernel's fused linear
losses, written anew here for per-token outputs):

1. The forward computes, per chunk, the gradient of each token's divergence w.r.t. its student
   logits (the hand-written gradient of `row_divergence`), turns it at once into the hidden-state
   gradient [chunk, H] and adds it into the lm_head gradient [V, H], then drops the chunk.
2. The output is per token, so the backward receives a per-token grad_output g [N]. The hidden-state
   gradient is exact for any g (each token's row is scaled by g_n). The lm_head gradient is a sum
   over tokens, so it is reused (scaled) only when g is proportional to `token_weights` (default:
   uniform, which covers a plain mean); otherwise the backward recomputes it chunk by chunk with the
   true g: always exact, one extra pass over the logits when the hint is wrong. Pass the per-token
   loss weights (e.g. 1/(B·|ŷ_i|)) as `token_weights` to stay on the fast path.
3. Double backward is not supported.

Logit precision (`float32_logits`). By default the logits are computed in the weights' dtype and
upcast, as a bf16 model computes them. A bf16 logit carries an absolute rounding error of up to
|z|·2^-9 (≈0.03 for z ≈ 16), enough to move a vocabulary term of the point-wise clip across its
threshold, where its gradient jumps to 0: with the clip, bf16 logits gave 17–21% gradient error
against float32 (benchmarks/gpu_check.py). With `float32_logits=True` each chunk's logits are one
float32 matrix product of the bf16 hidden states and weights (`torch.mm(..., out_dtype=float32)`
on CUDA; a float32 copy of the weight, made once per pass, elsewhere), so only the inputs are bf16.

Departs from the papers in nothing; see `divergence.py` for the divergence itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from atesd.divergence import DivergenceKind, DivergenceSpec, compute_dtype, row_divergence


@dataclass(frozen=True)
class DivergenceOutput:
    """Per-token results of `chunked_divergence`, all [N]; masked tokens hold 0 / False.

    divergence: D(p_T ‖ p_S) per token, differentiable w.r.t. the student hidden states and the
        lm_head weight/bias (whichever require grad).
    top1_agree: bool, argmax of the student's logits equals the teacher's.
    student_entropy, teacher_entropy: −Σ_v p log p of the temperature-scaled full-vocabulary
        distributions (also with top_k), in nats.
    clip_fraction: 1.0 where at least one vocabulary term hit the clip (term > clip), else 0.0;
        its mean over tokens is the fraction of tokens the clip changed. All 0 without a clip.
    The four statistics are detached.
    """

    divergence: Tensor
    top1_agree: Tensor
    student_entropy: Tensor
    teacher_entropy: Tensor
    clip_fraction: Tensor


_MM_OUT_DTYPE = [True]  # torch.mm(..., out_dtype=float32) works here (CUDA); set False on first failure


@dataclass
class _Head:
    """An lm_head: logits [R, V] = hidden [R, H] @ weight[V, H]^T + bias [V]; with `float32_logits`
    the product is taken in float32 from low-precision inputs (module docstring)."""

    weight: Tensor
    bias: Tensor | None
    float32_logits: bool = False
    _weight32: Tensor | None = None

    @property
    def widens(self) -> bool:
        return self.float32_logits and compute_dtype(self.weight.dtype) != self.weight.dtype

    def logits(self, hidden: Tensor) -> Tensor:
        """[R, V] logits: in the weight's dtype, or float32 when `widens`."""
        if not self.widens:
            return hidden @ self.weight.T
        if self.weight.is_cuda and _MM_OUT_DTYPE[0]:
            try:
                return torch.mm(hidden.to(self.weight.dtype), self.weight.T, out_dtype=torch.float32)
            except (RuntimeError, NotImplementedError, TypeError):  # a build without it: the copy below
                _MM_OUT_DTYPE[0] = False
        return hidden.to(torch.float32) @ self._float32_weight().T

    def _float32_weight(self) -> Tensor:
        if self._weight32 is None:
            self._weight32 = self.weight.detach().float()
        return self._weight32

    def logits_grad_hidden(self, grad_logits: Tensor) -> Tensor:
        """∂/∂hidden [R, H] = grad_logits [R, V] @ weight, accumulated and returned in float32 (CUDA:
        the gradient rounded to the weight's dtype for the product; elsewhere the float32 copy)."""
        if self.weight.is_cuda and _MM_OUT_DTYPE[0]:
            try:
                return torch.mm(grad_logits.to(self.weight.dtype), self.weight, out_dtype=torch.float32)
            except (RuntimeError, NotImplementedError, TypeError):
                _MM_OUT_DTYPE[0] = False
        return grad_logits @ self._float32_weight()

    def logprobs(self, hidden: Tensor, temperature: float) -> Tensor:
        """`temperature_logprobs` of this head's logits [R, V], computed in place."""
        logits = self.logits(hidden)
        if self.bias is not None:
            logits += self.bias
        logits = logits.to(compute_dtype(logits.dtype))
        if temperature != 1.0:
            logits /= temperature
        # Only the log-probs outlive this call: the logits buffer is dropped on return.
        return torch.log_softmax(logits, dim=-1)


@dataclass(frozen=True)
class _PassResult:
    values: Tensor
    stats: tuple[Tensor, Tensor, Tensor, Tensor] | None
    grad_hidden: Tensor | None
    grad_weight: Tensor | None
    grad_bias: Tensor | None


def chunked_divergence(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    lm_head_weight: Tensor,
    *,
    kind: DivergenceKind = "forward_kl",
    jsd_beta: float = 0.5,
    token_clip: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    mask: Tensor | None = None,
    chunk_size: int = 1024,
    lm_head_bias: Tensor | None = None,
    teacher_lm_head_weight: Tensor | None = None,
    teacher_lm_head_bias: Tensor | None = None,
    token_weights: Tensor | None = None,
    float32_logits: bool = False,
) -> DivergenceOutput:
    """D(p_T ‖ p_S) per token from hidden states, without [N, V] logits.

    student_hidden: [N, H], the student's final hidden states at the scored positions.
    teacher_hidden: [N, H], the teacher's at the same positions (detached).
    lm_head_weight: [V, H] (lm_head_bias: [V]) the student's head. The teacher's head defaults to
        the same tensors, detached (self-distillation: one model, and a frozen teacher made by
        disabling a LoRA adapter shares the head); pass `teacher_lm_head_weight` /
        `teacher_lm_head_bias` for a separate teacher copy. The teacher never receives gradients.
    kind, jsd_beta, token_clip, temperature, top_k: see `divergence.DivergenceSpec`.
    mask: [N] bool, True where the token counts; masked tokens give 0 and no gradient.
    chunk_size: tokens per chunk; the largest tensor alive is about chunk_size × V.
    token_weights: [N], optional speed hint: the weights the caller's loss puts on each
        token's divergence. Gradients are exact without it (module docstring, point 2).
    float32_logits: logits as float32 products of low-precision inputs (module docstring); without
        it they are computed in the weights' dtype. The divergence is in float32 or wider.
    """
    spec = DivergenceSpec(kind=kind, jsd_beta=jsd_beta, token_clip=token_clip, temperature=temperature, top_k=top_k)
    tokens, hidden_size = student_hidden.shape if student_hidden.dim() == 2 else (-1, -1)
    if teacher_hidden.shape != (tokens, hidden_size) or lm_head_weight.dim() != 2 or (
        lm_head_weight.shape[1] != hidden_size
    ):
        raise ValueError(
            "expected student_hidden and teacher_hidden [N, H] and lm_head_weight [V, H], got "
            f"{tuple(student_hidden.shape)}, {tuple(teacher_hidden.shape)}, "
            f"{tuple(lm_head_weight.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for name, tensor in (("mask", mask), ("token_weights", token_weights)):
        if tensor is not None and tensor.shape != (tokens,):
            raise ValueError(f"{name} must have shape [{tokens}], got {tuple(tensor.shape)}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    student_head = _Head(lm_head_weight, lm_head_bias, float32_logits)
    teacher_weight = lm_head_weight if teacher_lm_head_weight is None else teacher_lm_head_weight
    teacher_bias = lm_head_bias if teacher_lm_head_bias is None else teacher_lm_head_bias
    teacher_head = _Head(teacher_weight.detach(),
                         None if teacher_bias is None else teacher_bias.detach(), float32_logits)
    if teacher_head.weight.shape != lm_head_weight.shape:
        raise ValueError(
            f"teacher_lm_head_weight must match lm_head_weight {tuple(lm_head_weight.shape)}, "
            f"got {tuple(teacher_head.weight.shape)}"
        )

    active = None if mask is None else mask.nonzero().squeeze(1)
    student_rows = student_hidden if active is None else student_hidden.index_select(0, active)
    teacher_rows = teacher_hidden.detach()
    if active is not None:
        teacher_rows = teacher_rows.index_select(0, active)
    weight_rows = None
    if token_weights is not None:
        weight_rows = token_weights if active is None else token_weights.index_select(0, active)
        weight_rows = weight_rows.detach().to(compute_dtype(lm_head_weight.dtype))

    trainable = [student_rows, lm_head_weight] + ([] if lm_head_bias is None else [lm_head_bias])
    if torch.is_grad_enabled() and any(t.requires_grad for t in trainable):
        values, *stats = _ChunkedDivergenceFunction.apply(
            student_rows, lm_head_weight, lm_head_bias, teacher_rows,
            teacher_head, weight_rows, spec, chunk_size, float32_logits,
        )
    else:
        result = _chunk_pass(student_rows, student_head, teacher_rows, teacher_head, spec,
                             chunk_size, grad_row_weights=None, want_stats=True)
        values, stats = result.values, list(result.stats)

    if active is None:
        return DivergenceOutput(values, *stats)
    full = [t.new_zeros((tokens,)).index_copy(0, active, t) for t in [values, *stats]]
    return DivergenceOutput(*full)


class _ChunkedDivergenceFunction(torch.autograd.Function):
    """Per-token divergence whose gradients are computed in the forward (module docstring)."""

    @staticmethod
    def forward(ctx, student_hidden, weight, bias, teacher_hidden, teacher_head, token_weights,
                spec, chunk_size, float32_logits):
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        student_head = _Head(weight, bias, float32_logits)
        row_weights = token_weights
        if row_weights is None:
            row_weights = student_hidden.new_ones(student_hidden.shape[0],
                                                  dtype=compute_dtype(weight.dtype))
        result = _chunk_pass(
            student_hidden, student_head, teacher_hidden, teacher_head, spec, chunk_size,
            grad_row_weights=row_weights, want_grad_hidden=needs_hidden,
            want_grad_weight=needs_weight, want_grad_bias=needs_bias, want_stats=True,
        )
        ctx.save_for_backward(student_hidden, weight, bias, teacher_hidden, row_weights)
        # Kept on ctx, not saved: the backward scales them in place (a [V, H] copy would double
        # the loss's largest buffer) and hands them to autograd, so it can run only once.
        ctx.precomputed = (result.grad_hidden, result.grad_weight, result.grad_bias)
        ctx.teacher_head, ctx.spec, ctx.chunk_size = teacher_head, spec, chunk_size
        ctx.float32_logits = float32_logits
        ctx.mark_non_differentiable(*result.stats)
        return (result.values, *result.stats)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values, *unused_stat_grads):
        student_hidden, weight, bias, teacher_hidden, row_weights = ctx.saved_tensors
        if ctx.precomputed is None:
            raise RuntimeError("chunked_divergence supports one backward pass (no retain_graph reuse)")
        grad_hidden, grad_weight, grad_bias = ctx.precomputed
        ctx.precomputed = None
        grad_values = grad_values.to(row_weights.dtype)
        if grad_hidden is not None:
            grad_hidden = grad_hidden.mul_(grad_values[:, None]).to(student_hidden.dtype)
        if grad_weight is not None or grad_bias is not None:
            scale = _common_ratio(grad_values, row_weights)
            if scale is None:
                redo = _chunk_pass(
                    student_hidden, _Head(weight, bias, ctx.float32_logits), teacher_hidden, ctx.teacher_head,
                    ctx.spec, ctx.chunk_size, grad_row_weights=grad_values,
                    want_grad_weight=grad_weight is not None, want_grad_bias=grad_bias is not None,
                )
                grad_weight, grad_bias = redo.grad_weight, redo.grad_bias
            else:
                grad_weight = None if grad_weight is None else grad_weight.mul_(scale)
                grad_bias = None if grad_bias is None else grad_bias.mul_(scale)
            grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
            grad_bias = None if grad_bias is None else grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None


@torch.no_grad()
def _chunk_pass(
    student_hidden: Tensor,
    student_head: _Head,
    teacher_hidden: Tensor,
    teacher_head: _Head,
    spec: DivergenceSpec,
    chunk_size: int,
    *,
    grad_row_weights: Tensor | None,
    want_grad_hidden: bool = False,
    want_grad_weight: bool = False,
    want_grad_bias: bool = False,
    want_stats: bool = False,
) -> _PassResult:
    """One walk over the tokens [R, H], chunk by chunk.

    Returns the values [R], the stats when asked, and the gradients asked for:
    grad_hidden [R, H] = ∂value_n/∂hidden_n per row (unweighted), and the lm_head gradients
    Σ_n w_n ∂value_n/∂(weight, bias) with w = grad_row_weights [R]. Gradients are accumulated in
    float32 or wider.
    """
    weight = student_head.weight
    dtype = compute_dtype(weight.dtype)
    rows = student_hidden.shape[0]
    values = torch.empty(rows, dtype=dtype, device=weight.device)
    stats = None
    if want_stats:
        stats = (torch.empty(rows, dtype=torch.bool, device=weight.device),
                 *(torch.empty(rows, dtype=dtype, device=weight.device) for _ in range(3)))
    grad_hidden = torch.empty(rows, student_hidden.shape[1], dtype=dtype,
                              device=weight.device) if want_grad_hidden else None
    grad_weight = torch.zeros(weight.shape, dtype=dtype,
                              device=weight.device) if want_grad_weight else None
    grad_bias = torch.zeros(weight.shape[0], dtype=dtype,
                            device=weight.device) if want_grad_bias else None
    any_grad = want_grad_hidden or want_grad_weight or want_grad_bias

    for start in range(0, rows, chunk_size):
        end = min(start + chunk_size, rows)
        hidden = student_hidden[start:end]
        row = row_divergence(student_head.logprobs(hidden, spec.temperature),
                             teacher_head.logprobs(teacher_hidden[start:end], spec.temperature),
                             spec, with_grad=any_grad)
        values[start:end] = row.value
        if any_grad:
            grad_logits = row.grad_logits
            if grad_hidden is not None:
                if student_head.widens:  # float32 logits: keep their gradient in float32 too
                    grad_hidden[start:end] = student_head.logits_grad_hidden(grad_logits)
                else:
                    grad_hidden[start:end] = grad_logits.to(weight.dtype) @ weight
            weighted = grad_logits.mul_(grad_row_weights[start:end, None])
            if grad_weight is not None:
                grad_weight.addmm_(weighted.T, hidden.to(dtype))
            if grad_bias is not None:
                grad_bias += weighted.sum(dim=0)
            del grad_logits, weighted
        if stats is not None:
            top1, student_entropy, teacher_entropy, clipped = stats
            # argmax of log-probs is the argmax of the logits (log_softmax is monotone).
            top1[start:end] = row.student_logprobs.argmax(-1) == row.teacher_logprobs.argmax(-1)
            student_entropy[start:end] = _entropy(row.student_logprobs)
            teacher_entropy[start:end] = _entropy(row.teacher_logprobs)
            clipped[start:end] = row.any_clipped.to(dtype)
        del row
    return _PassResult(values, stats, grad_hidden, grad_weight, grad_bias)


def auto_chunk_size(vocab_size: int, memory_mib: int = 512, largest: int = 1024, smallest: int = 16) -> int:
    """The largest power of two in [smallest, largest] whose working memory, about five float32
    [chunk, V] buffers (BENCHMARKS.md: 389 MiB at chunk 128 × V 151,936), fits in `memory_mib`:
    128 for Qwen3's vocabulary at the default 512 MiB, `largest` for small vocabularies."""
    chunk = largest
    while chunk > smallest and 5 * 4 * vocab_size * chunk > memory_mib * 2**20:
        chunk //= 2
    return chunk


def _entropy(logprobs: Tensor) -> Tensor:
    """−Σ_v p(v) log p(v) over the last dim: [R, V] → [R]."""
    return logprobs.exp().mul_(logprobs).sum(dim=-1).neg_()


def _common_ratio(grad_values: Tensor, row_weights: Tensor) -> Tensor | None:
    """c with grad_values == c · row_weights to a few ulps, or None if they are not proportional."""
    weighted = row_weights != 0
    if bool((grad_values[~weighted] != 0).any()):
        return None
    ratios = grad_values[weighted] / row_weights[weighted]
    if ratios.numel() == 0:
        return grad_values.new_zeros(())
    tolerance = 8 * torch.finfo(ratios.dtype).eps * ratios.abs().max()
    if bool(ratios.max() - ratios.min() > tolerance):
        return None
    return ratios.mean()
