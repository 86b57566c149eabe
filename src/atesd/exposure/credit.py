"""First-order probe credit of a reveal ratio (ours, beyond the paper): reward="counterfactual".

For rollout i of step t and a reveal ratio α, one gradient step on the distillation loss changes
the held-out probe NLL, to first order, by
    ΔNLL_probe ≈ −η · ⟨u, ∇_θ L_i(θ_t; α)⟩,   u = P ∇_θ NLL_probe(θ_t)
(P: Adam's diagonal preconditioner 1/(√v̂ + ε), the identity before the optimizer's first step).
The credit of α for rollout i is the directional derivative along the unit direction û = u/‖u‖:
    c_i(α) = ⟨∇_θ L_i(θ_t; α), û⟩ ≈ [L_i(θ_t + εû; α) − L_i(θ_t − εû; α)] / 2ε
(positive: α's update lowers the probe NLL). The teacher's distributions are computed once on θ_t
and held fixed, so the same two perturbed student forwards serve every ratio. Two ratios scored
on the same θ_t and the same rollouts differ only by α: c_i(α) − c_i(α′) is free of the
batch-to-batch noise that swamps the lookahead rewards (docs/algorithm.md, "Why the controller
did not learn").

How c_i(α) is computed (exposure.credit_derivative):
  "central_difference": the difference quotient above, two perturbed student forwards. It needs
    float32 weights: in bfloat16 the ±εû step and the loss difference drown in rounding.
  "forward_mode" (any dtype, LoRA): exact to the forward's rounding, by the chain rule through the
    final hidden states h (the head's input) and the head's weight W:
        c_i(α) = ⟨∂L_i(α)/∂h, ḣ⟩ + ⟨∂L_i(α)/∂W, Ẇ⟩,   ḣ = (∂h/∂θ)·û,   Ẇ = û's entry for W (0 if frozen)
    ḣ is one forward-mode pass (torch.autograd.forward_ad) of the student with û as the parameters'
    tangent, shared by every ratio; ∂L_i/∂h and ∂L_i/∂W come from the divergence's own backward on
    the detached h (in float32), one per ratio for all rollouts (the chunked head only, no model
    backward). No difference of two nearly equal losses is ever taken, so bfloat16 weights lose no
    more than the forward's own relative rounding.
Both perturb or differentiate the whole local parameters, so a sharded policy (FSDP, ZeRO-3) is
refused by the loop.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.autograd.forward_ad as forward_ad
from torch.nn.attention import SDPBackend, sdpa_kernel

from atesd.divergence_chunked import chunked_divergence
from atesd.prompts import reference_completion, student_prompt
from atesd.scoring import SequenceBatch, build_sequences, completion_hidden, final_norm, text_ids, token_logprobs


@dataclass(frozen=True)
class StepCredit:
    """The paired credit of one step: for each credited example (its index in the step's global
    batch), c_i(α_i) under the ratio trained with and c_i(α′_i) under its counterfactual."""

    indices: tuple[int, ...]
    chosen: tuple[float, ...]
    counterfactual: tuple[float, ...]

    def paired(self) -> list[float]:
        """c_i(α_i) − c_i(α′_i) per credited example."""
        return [a - b for a, b in zip(self.chosen, self.counterfactual)]

    def paired_mean(self) -> float:
        paired = self.paired()
        return sum(paired) / len(paired) if paired else 0.0


class ProbeCredit:
    """Measures c_i(α) on held-out probe problems (`probe`), see the module docstring.

    kind: which probe objective Φ the credit's direction descends.
      "reference": Φ = the student's NLL of the probe problems' reference solutions (token mean per
        problem, mean over problems).
      "accuracy": Φ = −(1/N) Σ_j A_j · mean log p(y_j | x_j) over `samples` fresh T = 1 samples y_j
        per probe problem, A_j = r_j − mean of its problem's r (r: the verified answer), whose
        gradient is an unbiased estimate of −∇ accuracy on the probe (REINFORCE with a group
        baseline); the samples are drawn anew at every call (seeded by `seed`).
    """

    def __init__(self, probe: Sequence, tokenizer, prompts, loss_cfg, step: float, kind: str = "reference",
                 samples: int = 4, max_new_tokens: int = 128, refresh_every: int = 1,
                 derivative: str = "central_difference"):
        if derivative not in ("central_difference", "forward_mode"):
            raise ValueError(f"exposure.credit_derivative must be 'central_difference' or 'forward_mode', got "
                             f"{derivative!r}")
        self.loss_cfg, self.step, self.pad_id, self.kind = loss_cfg, step, tokenizer.pad_token_id, kind
        self.derivative = derivative
        self.tokenizer, self.probe, self.samples, self.max_new_tokens = tokenizer, list(probe), samples, max_new_tokens
        self.refresh_every, self._cached = refresh_every, None
        self.probe_prompts = [student_prompt(tokenizer, p.problem, prompts) for p in probe]
        self.probe_batch = build_sequences(
            self.probe_prompts, [text_ids(tokenizer, reference_completion(p.solution, tokenizer)) for p in probe],
            self.pad_id)

    def _probe_sequences(self, model, seed: int) -> tuple[SequenceBatch, torch.Tensor | None]:
        """The sequences whose log-likelihood Φ weighs, and their weights (None: the reference NLL)."""
        if self.kind == "reference":
            return self.probe_batch, None
        from atesd.answers import score_batch
        from atesd.rollout import SamplingParams, make_rollout_engine

        engine = make_rollout_engine("hf", model, self.tokenizer, batch_size=256)
        prompts = [p for p in self.probe_prompts for _ in range(self.samples)]
        rollouts = engine.generate(prompts, SamplingParams(self.max_new_tokens, 1.0, 1.0, 0, seed=seed))
        rewards = torch.tensor(score_batch([r.text for r in rollouts],
                                           [p.answer for p in self.probe for _ in range(self.samples)], workers=0),
                               dtype=torch.float32).view(len(self.probe), self.samples)
        advantages = (rewards - rewards.mean(1, keepdim=True)).flatten()
        return build_sequences(prompts, [list(r.completion_ids) for r in rollouts], self.pad_id), advantages

    def direction_at(self, step: int, model, optimizer) -> list[torch.Tensor]:
        """`direction` on θ_t, recomputed on the first step of every `refresh_every` steps and reused
        in between (the probe direction changes slowly; it costs a forward and backward)."""
        block = step // self.refresh_every
        if self._cached is None or self._cached[0] != block:
            self._cached = (block, self.direction(model, optimizer, seed=step))
        return self._cached[1]

    def state_dict(self) -> dict:
        """The cached direction (it was computed on an earlier step's weights: a resumed run must reuse
        it, not recompute it on the weights it resumes from)."""
        if self._cached is None:
            return {}
        return {"block": self._cached[0], "direction": [d.detach().cpu().clone() for d in self._cached[1]]}

    def load_state_dict(self, state: dict, device=None) -> None:
        self._cached = None if not state else (int(state["block"]), [d.to(device) for d in state["direction"]])

    def direction(self, model, optimizer, seed: int = 0) -> list[torch.Tensor]:
        """û = P∇Φ / ‖P∇Φ‖ over the trainable parameters (their .grad untouched)."""
        params = [p for p in model.parameters() if p.requires_grad]
        device = params[0].device
        batch, weights = self._probe_sequences(model, seed)
        batch = SequenceBatch(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in (
            batch.input_ids, batch.attention_mask, batch.position_ids, batch.target_index, batch.target_ids,
            batch.token_rollout, batch.completion_lengths)))
        logprobs = token_logprobs(completion_hidden(model, batch), model.get_output_embeddings().weight,
                                  batch.target_ids, 1.0, self.loss_cfg.chunk_size)
        lengths = torch.tensor(batch.completion_lengths, device=device, dtype=logprobs.dtype).clamp(min=1)
        per_sequence = logprobs.new_zeros(len(lengths)).index_add_(0, batch.token_rollout, logprobs) / lengths
        if weights is None:
            objective = -per_sequence.mean()
        elif bool((weights != 0).any()):
            objective = -(weights.to(device) * per_sequence).mean()
        else:  # every probe problem all right or all wrong: no accuracy gradient this time
            return [torch.zeros_like(p) for p in params]
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        direction = []
        for param, grad in zip(params, grads):
            grad = torch.zeros_like(param) if grad is None else grad
            state = optimizer.state.get(param, {})
            if "exp_avg_sq" in state and int(state.get("step", 0)) > 0:
                group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
                beta2, eps = group["betas"][1], group["eps"]
                v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
                grad = grad / (v_hat.sqrt() + eps)
            direction.append(grad.detach())
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in direction)).item()
        return [d / max(norm, 1e-30) for d in direction]

    @torch.no_grad()
    def measure(self, model, teacher, student: SequenceBatch, teacher_views: Sequence[SequenceBatch],
                direction: list[torch.Tensor]) -> torch.Tensor:
        """[arms, B]: c_i for each teacher view (one per ratio arm) of the B rollouts in `student`."""
        if self.derivative == "forward_mode":
            return self._measure_forward_mode(model, teacher, student, teacher_views, direction)
        cfg = self.loss_cfg
        head = model.get_output_embeddings()
        teacher_hidden, teacher_head, keep = self._teacher_side(model, teacher, student, teacher_views)
        counts = keep.float().new_zeros(len(student.completion_lengths)).index_add_(
            0, student.token_rollout, keep.float()).clamp(min=1)
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        losses = []
        try:
            for sign in (1.0, -1.0):
                for param, origin, d in zip(params, saved, direction):
                    param.copy_(origin).add_(d, alpha=sign * self.step)
                hidden = completion_hidden(model, student)
                per_arm = []
                for t_hidden in teacher_hidden:
                    out = chunked_divergence(hidden, t_hidden, head.weight.detach(), kind=cfg.divergence,
                                             jsd_beta=cfg.jsd_beta, token_clip=cfg.token_clip,
                                             temperature=cfg.temperature, top_k=cfg.top_k, mask=keep,
                                             chunk_size=cfg.chunk_size, teacher_lm_head_weight=teacher_head)
                    sums = out.divergence.double().new_zeros(len(counts)).index_add_(
                        0, student.token_rollout, out.divergence.double())
                    per_arm.append(sums / counts.double())
                losses.append(torch.stack(per_arm))
        finally:
            for param, origin in zip(params, saved):
                param.copy_(origin)
        return ((losses[0] - losses[1]) / (2 * self.step)).float()

    def _teacher_side(self, model, teacher, student: SequenceBatch, teacher_views: Sequence[SequenceBatch]):
        """The teacher's hidden states of each view on θ_t (held fixed), its head, and the token mask."""
        with teacher.context(model):
            teacher_model = teacher.model(model)
            teacher_hidden = [completion_hidden(teacher_model, view) for view in teacher_views]
            teacher_head = teacher_model.get_output_embeddings().weight.detach().clone()
        keep = torch.ones_like(student.target_ids, dtype=torch.bool)
        if self.loss_cfg.skip_first_tokens:
            first = torch.cat([torch.arange(n, device=keep.device) for n in student.completion_lengths])
            keep = first >= self.loss_cfg.skip_first_tokens
        return teacher_hidden, teacher_head, keep

    def _measure_forward_mode(self, model, teacher, student: SequenceBatch, teacher_views: Sequence[SequenceBatch],
                              direction: list[torch.Tensor]) -> torch.Tensor:
        """c_i(α) = ⟨∂L_i/∂h, ḣ⟩ + ⟨∂L_i/∂W, Ẇ⟩ (module docstring), per view and rollout, in float32 from
        the forward's h and ḣ: one divergence backward per view for all rollouts. The head term rides on
        the same backward: with x = [h, 0] and the head [W, Ẇ] the logits are unchanged and the
        gradient's second half is ∂L/∂z·Ẇ, so c_r = ⟨g_r[:H], ḣ_r⟩ + ⟨g_r[H:], h_r⟩ for every token r."""
        cfg = self.loss_cfg
        teacher_hidden, teacher_head, keep = self._teacher_side(model, teacher, student, teacher_views)
        hidden, tangent = hidden_tangent(model, student, direction)
        hidden, tangent = hidden.float(), tangent.float()
        head = model.get_output_embeddings().weight
        trainable = [p for p in model.parameters() if p.requires_grad]
        head_tangent = next((d for p, d in zip(trainable, direction) if p is head), None)
        weight, teacher_weight = head.detach().float(), teacher_head.float()
        if head_tangent is not None:
            weight = torch.cat([weight, head_tangent.float()], dim=1)
            teacher_weight = torch.cat([teacher_weight, torch.zeros_like(teacher_weight)], dim=1)
        counts = keep.float().new_zeros(len(student.completion_lengths)).index_add_(
            0, student.token_rollout, keep.float()).clamp(min=1)
        per_token = (1.0 / counts).index_select(0, student.token_rollout)  # L_i is a mean over its tokens
        widened = lambda t: t if head_tangent is None else torch.cat([t, torch.zeros_like(t)], dim=1)  # noqa: E731
        student_rows = widened(hidden).detach()
        values = []
        for t_hidden in teacher_hidden:
            t_hidden = widened(t_hidden.float())
            x = student_rows.clone().requires_grad_(True)
            with torch.enable_grad():
                out = chunked_divergence(x, t_hidden, weight, kind=cfg.divergence, jsd_beta=cfg.jsd_beta,
                                         token_clip=cfg.token_clip, temperature=cfg.temperature, top_k=cfg.top_k,
                                         mask=keep, chunk_size=cfg.chunk_size, teacher_lm_head_weight=teacher_weight)
                (grad,) = torch.autograd.grad((out.divergence * per_token).sum(), [x])
            grad = grad.double()
            by_token = (grad[:, :hidden.shape[1]] * tangent.double()).sum(1)
            if head_tangent is not None:
                by_token = by_token + (grad[:, hidden.shape[1]:] * hidden.double()).sum(1)
            values.append(by_token.new_zeros(len(counts)).index_add_(0, student.token_rollout, by_token))
        return torch.stack(values).float()


@contextmanager
def _no_checkpointing(model):
    """Gradient checkpointing off for a forward that builds no graph (it would wrap the layers in a
    checkpoint, which forward-mode AD does not go through); restored after."""
    switched = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for m in switched:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in switched:
            m.gradient_checkpointing = True


@torch.no_grad()
def hidden_tangent(model, batch: SequenceBatch, direction: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """h and ḣ = (∂h/∂θ)·û at the positions predicting completion tokens ([N, H] each): one forward of
    `model` (unwrapped) whose trainable parameters carry û as their forward-mode tangent. Attention
    runs in the math kernel (the fused kernels have no forward-mode derivative)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    captured: list[torch.Tensor] = []
    with forward_ad.dual_level(), sdpa_kernel(SDPBackend.MATH), _no_checkpointing(model):
        duals = {name: forward_ad.make_dual(p.detach(), d.to(p.dtype)) for (name, p), d in zip(named, direction)}
        hook = final_norm(model).register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            torch.func.functional_call(model, duals, (), {
                "input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                "position_ids": batch.position_ids, "logits_to_keep": 1, "use_cache": False}, strict=False)
        finally:
            hook.remove()
        primal, tangent = forward_ad.unpack_dual(captured[0])
        if tangent is None:  # no trainable parameter reaches h
            tangent = torch.zeros_like(primal)
        flat = lambda t: t.reshape(-1, t.shape[-1]).index_select(0, batch.target_index)
        return flat(primal), flat(tangent)
