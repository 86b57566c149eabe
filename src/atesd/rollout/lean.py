"""Lean KV-cached sampling for plain Qwen3 models: the HF backend's fast path on small models.

`transformers`' `generate` on a 0.84M-parameter model is bound by per-operation overhead, not by
arithmetic: each decoding step of the toy model runs ~300 small tensor operations (four RMSNorms
of seven operations per layer, a growing KV cache concatenated every step, the generation loop's
logits processors). This module decodes the same model with ~30 operations per layer, reading the
model's own weights at every call (so an optimizer step is seen at once, like `generate`):

    embed → per layer: rms_norm → one fused q/k/v matmul → q_norm, k_norm → rotary (the model's
    own rotary module) → write k, v into a preallocated cache → scaled-dot-product attention over
    the cache (grouped-query) → o_proj → residual → rms_norm → one fused gate/up matmul → SiLU·up →
    down_proj → residual;  final norm → lm_head → temperature → top-k → top-p → sample.

Rows that have stopped are dropped from the batch once at most half of it is still running
(their cache rows too), so the few long rollouts of a batch do not pay for the finished ones.

It is used only where it computes exactly what the model computes: an unwrapped
`Qwen3ForCausalLM` with full attention and the default rotary embedding (checked by `supports`,
tested against the model's own forward). Anything else (peft-wrapped models, other architectures,
sliding windows) goes through `generate`.

Departures from `generate` (none changes the sampling distribution):
1. Random draws are taken in another order than `generate`'s (one `multinomial` per step over
   the running rows), so the sampled ids differ from `generate`'s for the same seed; greedy
   decoding gives the same ids.
2. RMSNorm is `torch.nn.functional.rms_norm` in the model's dtype (the model upcasts to float32
   first: identical in float32, a rounding difference in bfloat16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from atesd.rollout.base import SamplingParams


def supports(model) -> bool:
    """True for an unwrapped `Qwen3ForCausalLM` with full attention and default RoPE."""
    if type(model).__name__ != "Qwen3ForCausalLM" or hasattr(model, "peft_config"):
        return False
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    return (not getattr(config, "use_sliding_window", False)
            and all(t == "full_attention" for t in getattr(config, "layer_types", None) or ["full_attention"])
            and rope.get("rope_type", "default") == "default"
            and config.hidden_act == "silu")


@dataclass(frozen=True)
class _Layer:
    qkv_weight: torch.Tensor  # [(H + 2·K)·D, hidden]
    qkv_bias: torch.Tensor | None
    o_proj: torch.nn.Linear
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    gate_up_weight: torch.Tensor  # [2·I, hidden]
    down_proj: torch.nn.Linear


def _layers(model) -> list[_Layer]:
    """The decoder layers' weights, q/k/v and gate/up fused into one matrix each (copies of the
    model's current weights: cheap for the small models this path is for)."""
    layers = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        biases = [p.bias for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
        layers.append(_Layer(
            qkv_weight=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
            qkv_bias=None if biases[0] is None else torch.cat(biases),
            o_proj=attn.o_proj,
            input_norm=layer.input_layernorm.weight,
            post_norm=layer.post_attention_layernorm.weight,
            q_norm=attn.q_norm.weight,
            k_norm=attn.k_norm.weight,
            gate_up_weight=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
            down_proj=mlp.down_proj,
        ))
    return layers


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LeanDecoder:
    """Batched sampling from a `supports(model)` model; see the module docstring."""

    def __init__(self, model) -> None:
        if not supports(model):
            raise ValueError(f"LeanDecoder does not support {type(model).__name__}; use generate")
        config = model.config
        self.model = model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim ** -0.5

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)

    def _forward(self, layers: list[_Layer], ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 cache: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> torch.Tensor:
        """Hidden states [B, T, hidden] of `ids` [B, T] at `positions` [B, T]; k/v written into the
        cache at columns start … start+T−1; mask [B, 1, T, start+T] (True: may attend)."""
        model = self.model.model
        hidden = model.embed_tokens(ids)
        cos, sin = model.rotary_emb(hidden, positions)  # [B, T, D]
        cos, sin = cos[:, None], sin[:, None]
        batch, length = ids.shape
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        end = start + length
        for layer, (k_cache, v_cache) in zip(layers, cache):
            x = self._norm(hidden, layer.input_norm)
            qkv = F.linear(x, layer.qkv_weight, layer.qkv_bias)
            q, k, v = qkv.split((q_size, kv_size, kv_size), dim=-1)
            q = self._norm(q.view(batch, length, self.heads, self.head_dim), layer.q_norm).transpose(1, 2)
            k = self._norm(k.view(batch, length, self.kv_heads, self.head_dim), layer.k_norm).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k_cache[:, :, start:end] = k * cos + _rotate_half(k) * sin
            v_cache[:, :, start:end] = v.view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
            attn = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end], attn_mask=mask,
                                                  scale=self.scaling, enable_gqa=self.heads != self.kv_heads)
            hidden = hidden + layer.o_proj(attn.transpose(1, 2).reshape(batch, length, q_size))
            x = self._norm(hidden, layer.post_norm)
            gate, up = F.linear(x, layer.gate_up_weight).chunk(2, dim=-1)
            hidden = hidden + layer.down_proj(F.silu(gate) * up)
        return model.norm(hidden)

    @torch.inference_mode()
    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams, stop_ids: Sequence[int],
               pad_id: int, generator: torch.Generator | None = None) -> tuple[list[list[int]], list[list[float]]]:
        """Completion ids (each ending at its first stop id, or at max_new_tokens) and the log-prob of
        each sampled id under the temperature-scaled softmax (temperature 1 when greedy). Draws come
        from `generator` (default: torch's global generator; `params.seed` is the caller's to apply)."""
        device = next(self.model.parameters()).device
        dtype = self.model.model.embed_tokens.weight.dtype
        batch = len(prompts)
        width = max(len(p) for p in prompts)
        total = width + params.max_new_tokens
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        real = torch.zeros((batch, total), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"prompt {row} is empty")
            ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            real[row, width - len(prompt):width] = True
        ids, real = ids.to(device), real.to(device)
        positions = (real[:, :width].long().cumsum(-1) - 1).clamp(min=0)
        layers = _layers(self.model)
        cache = [(torch.empty(batch, self.kv_heads, total, self.head_dim, device=device, dtype=dtype),
                  torch.empty(batch, self.kv_heads, total, self.head_dim, device=device, dtype=dtype))
                 for _ in layers]
        # prefill: causal over real keys; a padding query attends to itself only (no all-masked row)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        diagonal = torch.eye(width, dtype=torch.bool, device=device)
        mask = (causal & real[:, None, :width]) | diagonal
        hidden = self._forward(layers, ids, positions, mask[:, None], cache, 0)[:, -1]
        head = self.model.lm_head
        stop = torch.tensor(list(stop_ids), device=device)
        rows = torch.arange(batch, device=device)  # original index of each running row
        last = positions[:, -1]
        out_ids: list[list[int]] = [[] for _ in range(batch)]
        out_logprobs: list[list[float]] = [[] for _ in range(batch)]
        for step in range(params.max_new_tokens):
            token, logprob = self._draw(F.linear(hidden, head.weight, head.bias).float(), params, generator)
            for row, t, lp in zip(rows.tolist(), token.tolist(), logprob.tolist()):
                out_ids[row].append(t)
                out_logprobs[row].append(lp)
            running = ~torch.isin(token, stop)
            if step + 1 == params.max_new_tokens or not bool(running.any()):
                break
            column = width + step
            real[:, column] = True
            if int(running.sum()) <= len(rows) // 2:  # compact: drop finished rows and their cache
                keep = running.nonzero().squeeze(1)
                rows, token, last, real = rows[keep], token[keep], last[keep], real[keep]
                cache = [(k[keep], v[keep]) for k, v in cache]
            last = last + 1
            step_mask = real[:, None, None, : column + 1]
            hidden = self._forward(layers, token[:, None], last[:, None], step_mask, cache, column)[:, -1]
        return out_ids, out_logprobs

    @staticmethod
    def _draw(logits: torch.Tensor, params: SamplingParams, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row from logits [B, V]: temperature → top-k → top-p (as `generate` orders
        them), and its log-prob under the temperature-scaled softmax before the filters."""
        if params.greedy:
            token = logits.argmax(-1)
            return token, torch.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(1)
        scaled = logits / params.temperature
        logprobs = torch.log_softmax(scaled, -1)
        filtered = filter_top_k_top_p(scaled, params.top_k, params.top_p)
        token = torch.multinomial(torch.softmax(filtered, -1), 1, generator=generator).squeeze(1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(1)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits [B, V] with entries outside the top-k, then outside the top-p nucleus, set to −inf.

    Top-p keeps the smallest set of most probable tokens whose probability reaches top_p (the
    token that crosses it included, at least one token), as `transformers`' TopPLogitsWarper.
    """
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=False)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative <= (1 - top_p)
        drop[:, -1] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits
