"""Optimiser pieces of the training loop: AdamW groups, warm-up + cosine, weight EMA."""

from __future__ import annotations

import math

import torch
from torch import nn


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and convolutions only (not on biases, norms or
    embeddings' 1-D parameters), the usual transformer recipe."""
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


class WarmupCosine:
    """lr multiplier: linear warm-up over `warmup` steps, then cosine from 1 to `min_ratio` at
    `total`. A callable object (not a lambda), so the scheduler's state_dict stays JSON."""

    def __init__(self, total: int, warmup: int, min_ratio: float) -> None:
        self.total, self.warmup, self.min_ratio = int(total), int(warmup), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int, min_ratio: float
              ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total, warmup, min_ratio))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters and float buffers."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        if e.dtype.is_floating_point:
            e.lerp_(b, 1.0 - decay)
        else:
            e.copy_(b)
