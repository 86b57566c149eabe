"""AdamW over the trainable parameters, with linear warm-up then a constant or cosine rate."""

from __future__ import annotations

import math

import torch

from atesd.config import OptimConfig


def make_optimizer(model, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (LoRA target_modules matched nothing?)")
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)


def learning_rate_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of optim.lr at `step`: (step+1)/warmup during warm-up, then 1 or a cosine to 0."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, cfg, total_steps))
