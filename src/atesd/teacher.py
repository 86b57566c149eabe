"""Which weights play the teacher p_T: the teacher kinds (sequences and scoring: `atesd.scoring`).

Teacher kinds (TeacherConfig.kind):
1. frozen: the initial policy. With LoRA, the same model with its adapter disabled (no copy);
   without LoRA, a frozen copy made before training.
2. live: the current weights under no_grad.
3. ema: a copy updated after each optimizer step, θ_T ← d·θ_T + (1−d)·θ.

A copy (ema, or frozen without LoRA) is made from the loaded policy before accelerate prepares it,
so it is a whole, unsharded model on every process (`to(device)` moves it next to the policy). It
cannot be made from a model that DeepSpeed ZeRO-3 loaded already partitioned (`zero3_init_flag`);
the EMA update reads the policy's parameters whole (`atesd.distributed.full_tensor`) under FSDP2
and ZeRO-3.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from atesd.distributed import full_tensor, is_sharded
from atesd.models import is_lora, output_head
from atesd.scoring import SequenceBatch, completion_hidden


class Teacher:
    """p_T: which weights score the teacher view. Call `forward` under no_grad."""

    def __init__(self, kind: str, policy, ema_decay: float = 0.99):
        self.kind = kind
        self.ema_decay = ema_decay
        self.copy = None
        if kind == "ema" or (kind == "frozen" and not is_lora(policy)):
            if is_sharded(policy):
                raise ValueError(f"teacher.kind={kind} needs a copy of the policy, which was loaded partitioned "
                                 "(DeepSpeed zero3_init_flag); use LoRA (the frozen teacher is then the model "
                                 "with its adapter off) or zero3_init_flag: false")
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    def to(self, device) -> None:
        """Move a teacher copy next to the prepared policy (nothing to move without a copy)."""
        if self.copy is not None:
            self.copy.to(device)

    def context(self, policy):
        """The context in which `model(policy)` acts as the teacher (adapter disabled for frozen LoRA)."""
        if self.kind == "frozen" and self.copy is None:
            return policy.disable_adapter()
        return contextlib.nullcontext()

    def model(self, policy):
        return self.copy if self.copy is not None else policy

    def head_weight(self, policy, student_head_weight: torch.Tensor) -> torch.Tensor:
        """The teacher's output-head weight: the copy's own, or (one model) the student's full head
        weight as the caller gathered it (`atesd.distributed.full_head_weight`)."""
        return student_head_weight if self.copy is None else output_head(self.copy).weight

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
            target.lerp_(full_tensor(source).to(target.dtype), 1.0 - self.ema_decay)

    def state_dict(self) -> dict:
        return {"ema": self.copy.state_dict()} if self.kind == "ema" else {}

    def load_state_dict(self, state: dict) -> None:
        if self.kind == "ema":
            self.copy.load_state_dict(state["ema"])
