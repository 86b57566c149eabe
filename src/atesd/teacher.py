"""Scoring a rollout under two prompts: sequence building, completion hidden states, teacher kinds.

The student and the teacher score the same completion token ids ŷ after different prompts
(OPSD, arXiv 2601.18734). Sequences are left-padded with explicit position ids, so no pad token sits
inside a sequence and positions match generation time; only the positions that predict completion
tokens are gathered, so no logits are ever computed for prompt positions.

Teacher kinds (TeacherConfig.kind):
1. frozen: the initial policy. With LoRA, the same model with its adapter disabled (no copy);
   without LoRA, a frozen copy made before training.
2. live: the current weights under no_grad.
3. ema: a copy updated after each optimizer step, θ_T ← d·θ_T + (1−d)·θ.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from atesd.models import is_lora, output_head


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


def completion_hidden(model, batch: SequenceBatch) -> torch.Tensor:
    """Final (normed) hidden states at the positions predicting completion tokens: [N, H].

    The model's own forward is called (so DDP/FSDP wrappers see it) with logits for one position
    only; the full [B, L, V] logits are never built.
    """
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    hidden = out.hidden_states[-1]  # [B, L, H]
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.target_index)


def check_same_completions(student: SequenceBatch, teacher: SequenceBatch) -> None:
    """The teacher must score exactly the student's sampled ids (no re-tokenisation drift)."""
    if student.completion_lengths != teacher.completion_lengths or not torch.equal(
        student.target_ids, teacher.target_ids
    ):
        raise AssertionError("teacher and student sequences do not end in the same completion ids")


class Teacher:
    """p_T: which weights score the teacher view. Call `forward` under no_grad."""

    def __init__(self, kind: str, policy, ema_decay: float = 0.99):
        self.kind = kind
        self.ema_decay = ema_decay
        self.copy = None
        if kind == "ema" or (kind == "frozen" and not is_lora(policy)):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    def context(self, policy):
        """The context in which `model(policy)` acts as the teacher (adapter disabled for frozen LoRA)."""
        if self.kind == "frozen" and self.copy is None:
            return policy.disable_adapter()
        return contextlib.nullcontext()

    def model(self, policy):
        return self.copy if self.copy is not None else policy

    def head_weight(self, policy) -> torch.Tensor:
        return output_head(self.model(policy)).weight

    @torch.no_grad()
    def hidden(self, policy, batch: SequenceBatch) -> torch.Tensor:
        """Teacher hidden states at completion positions, [N, H], no gradient."""
        with self.context(policy):
            return completion_hidden(self.model(policy), batch)

    @torch.no_grad()
    def after_optimizer_step(self, policy) -> None:
        """EMA update θ_T ← d·θ_T + (1−d)·θ; nothing for frozen and live teachers."""
        if self.kind != "ema":
            return
        for target, source in zip(self.copy.parameters(), policy.parameters()):
            target.lerp_(source.detach().to(target.dtype), 1.0 - self.ema_decay)

    def state_dict(self) -> dict:
        return {"ema": self.copy.state_dict()} if self.kind == "ema" else {}

    def load_state_dict(self, state: dict) -> None:
        if self.kind == "ema":
            self.copy.load_state_dict(state["ema"])
