"""Shared by the policy tests: a short supervised fit on a batch of expert windows."""

from __future__ import annotations

import math
from typing import Any

import torch


def train(policy: Any, batch: dict[str, Any], steps: int, lr: float, warmup: int = 0,
          cosine: bool = False) -> tuple[float, float]:
    """Adam on `policy.loss(batch)` for `steps` steps (linear warm-up over `warmup` steps; with `cosine`,
    then a cosine decay to 0 at the last step, so the last loss is not read on one of full-rate Adam's
    spikes); returns the first and the last loss."""
    opt = torch.optim.Adam(policy.parameters(), lr=lr)

    def factor(i: int) -> float:
        decay = 0.5 * (1 + math.cos(math.pi * i / steps)) if cosine else 1.0
        return min(1.0, (i + 1) / max(warmup, 1)) * decay

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    first = last = None
    for _ in range(steps):
        loss = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        first = loss.item() if first is None else first
        last = loss.item()
    return first, last
