"""Scoring completions under a prompt: the one place sequences are built and log-probs computed.

The student and the teacher score the same completion token ids ŷ after different prompts
(OPSD, arXiv 2601.18734). Sequences are left-padded with explicit position ids, so no pad token
sits inside a sequence and positions match generation time; only the positions that predict
completion tokens are gathered, so no logits are ever computed for prompt positions.

Used by the objectives (the loss), the exposure probe (probe NLL, grounding score g_t) and the
mismatch analysis:
    build_sequences → completion_hidden → token_logprobs        per-token log p(ŷ_n | prompt, ŷ_<n)
    completion_logprobs(model, prompts, completions)            the same, one tensor per completion
    grounding_score(...)                                        g: mean log p_T^α(withheld(y*, α))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from atesd.distributed import through_head
from atesd.divergence import compute_dtype
from atesd.prompts import PromptConfig, reference_completion, teacher_view
from atesd.reveal import withheld


@dataclass(frozen=True)
class SequenceBatch:
    """Prompt + completion sequences, left-padded to one length L.

    input_ids, attention_mask, position_ids: [B, L].
    target_index: [N] flat indices into [B*L] of the positions whose next token is a completion
        token (N = total completion tokens); target_ids: [N] those completion tokens.
    token_rollout: [N] which rollout each target belongs to; completion_lengths: per rollout.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    target_index: torch.Tensor
    target_ids: torch.Tensor
    token_rollout: torch.Tensor
    completion_lengths: tuple[int, ...]


def build_sequences(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, device=None
) -> SequenceBatch:
    """Left-pad prompt+completion rows; targets are the last len(completion) tokens of each row."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    length = max(len(r) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    target_index, target_ids, token_rollout = [], [], []
    for b, (row, comp) in enumerate(zip(rows, completions)):
        start = length - len(row)
        input_ids[b, start:] = torch.tensor(row, dtype=torch.long)
        mask[b, start:] = 1
        first_target = length - len(comp)  # position of the first completion token
        # the token at position j is predicted by the hidden state at position j-1
        target_index.extend(b * length + j - 1 for j in range(first_target, length))
        target_ids.extend(comp)
        token_rollout.extend([b] * len(comp))
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return SequenceBatch(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=position_ids.to(device),
        target_index=as_long(target_index),
        target_ids=as_long(target_ids),
        token_rollout=as_long(token_rollout),
        completion_lengths=tuple(len(c) for c in completions),
    )


def final_norm(model) -> torch.nn.Module:
    """The decoder's final norm, whose output is the final hidden state h_L (the head's input),
    through DDP/DeepSpeed (`.module`) and peft wrappers; FSDP2 wraps modules in place."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    norm = getattr(inner.get_decoder(), "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise TypeError(f"{type(inner).__name__} has no final norm at get_decoder().norm; atesd scores decoder-only "
                        "causal LMs with one (Qwen3, Llama, ...)")
    return norm


def completion_hidden(model, batch: SequenceBatch) -> torch.Tensor:
    """Final (normed) hidden states at the positions predicting completion tokens: [N, H].

    The model's own forward is called (so DDP/FSDP wrappers see it) with logits for one position
    only; the full [B, L, V] logits are never built. The final hidden state is taken from the
    final norm's output by a forward hook, not with `output_hidden_states=True`, which would keep
    every layer's [B, L, H] states alive (L+1 tensors; ~19 GB for an 8B model's probe over
    4k-token references) when only the last is read.
    """
    captured: list[torch.Tensor] = []
    hook = final_norm(model).register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=1,
            use_cache=False,
        )
    finally:
        hook.remove()
    hidden = captured[0]  # [B, L, H]: the first call is the forward's (a checkpointed recompute comes later)
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.target_index)


def check_same_completions(student: SequenceBatch, teacher: SequenceBatch) -> None:
    """The teacher must score exactly the student's sampled ids (no re-tokenisation drift)."""
    if student.completion_lengths != teacher.completion_lengths or not torch.equal(
        student.target_ids, teacher.target_ids
    ):
        raise AssertionError("teacher and student sequences do not end in the same completion ids")


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


def completion_logprobs(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
                        batch_size: int = 16, chunk_size: int = 1024) -> list[torch.Tensor]:
    """log p(completion_n | prompt, completion_<n) under `model` (call under no_grad), one tensor
    [len(completion)] per completion, `batch_size` sequences per forward. The head's weight is
    read through `atesd.distributed.through_head` (whole under FSDP2 and ZeRO-3 too)."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        batch = build_sequences(prompts[rows], completions[rows], pad_id, device)
        ids = batch.target_ids
        logprobs = through_head(model, lambda weight, hidden: token_logprobs(hidden, weight, ids, 1.0, chunk_size),
                                completion_hidden(model, batch))
        out += list(logprobs.cpu().split(list(batch.completion_lengths)))
    return out


def text_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def grounding_scores(model, tokenizer, problems: Sequence, reveal_ratio: float, prompts: PromptConfig,
                     batch_size: int = 16, chunk_size: int = 1024) -> list[float]:
    """Per problem, the teacher-grounded score: the mean log p_T^α over the tokens of
    reference_completion(withheld(y*, α)) (the steps the teacher was not shown, then the answer),
    teacher-forced after the teacher prompt at ratio α. g_t (ATESD's G_gt input) is their mean."""
    views = [teacher_view(tokenizer, p, reveal_ratio, prompts) for p in problems]
    completions = [text_ids(tokenizer, reference_completion(withheld(p.solution, reveal_ratio, prompts.reveal_rounding),
                                                            tokenizer))
                   for p in problems]
    logprobs = completion_logprobs(model, views, completions, tokenizer.pad_token_id, batch_size, chunk_size)
    return [float(lp.double().mean()) for lp in logprobs]
