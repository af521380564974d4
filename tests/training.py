"""Shared by the policy tests: a short supervised fit on a batch of expert windows."""

from __future__ import annotations

from typing import Any

import torch


def train(policy: Any, batch: dict[str, Any], steps: int, lr: float, warmup: int = 0) -> tuple[float, float]:
    """Adam on `policy.loss(batch)` for `steps` steps (linear warm-up over `warmup` steps); returns the
    first and the last loss."""
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(warmup, 1)))
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
