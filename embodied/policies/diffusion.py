"""A small diffusion action expert: a DiT over an action chunk plus a DDIM sampler.

MemoryVLA's action expert (CogACT-style) is a DiT whose sequence is one condition token
(diffusion-time embedding + a projection of the cognitive token) followed by H action tokens
with a learned position embedding; every block runs self-attention, a cross-attention to the
perceptual tokens and an MLP (pre-LN). It is trained with an MSE under a `squaredcos_cap_v2`
(cosine) schedule, regressing the noise (epsilon, MemoryVLA/CogACT), the clean chunk ("sample",
Diffusion Policy's choice in LeRobot) or the velocity, and sampled with a few deterministic DDIM steps.

Sampling is deterministic given the initial noise: the caller passes the noise (drawn from a
seeded generator), so a rollout can be reproduced exactly and rows do not share RNG state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from embodied.memory.pcmb import timestep_sinusoid


def cosine_alphas_cumprod(steps: int, max_beta: float = 0.999) -> Tensor:
    """The `squaredcos_cap_v2` schedule (Nichol & Dhariwal): cumulative alpha products [steps]."""

    def f(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / steps) / f(i / steps), max_beta) for i in range(steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0).float()


class DiTBlock(nn.Module):
    """Pre-LN block: self-attention over [cond; actions], cross-attention to the perceptual
    tokens (output projection zero-initialised, so a fresh block starts as self-attention + MLP),
    then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        nn.init.zeros_(self.cross_attn.out_proj.weight)
        nn.init.zeros_(self.cross_attn.out_proj.bias)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(self.ln2(x), context, context, need_weights=False)[0]
        return x + self.mlp(self.ln3(x))


class ActionDiT(nn.Module):
    """Predicts the noise added to an action chunk [B, H, A], given the diffusion step [B],
    the cognitive token [B, Dc] and the perceptual tokens [B, N, Dp]."""

    def __init__(self, action_dim: int, horizon: int, dim: int, cog_dim: int, per_dim: int,
                 layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.freq_dim = 64
        self.t_embed = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cog_proj = nn.Linear(cog_dim, dim)
        self.per_proj = nn.Linear(per_dim, dim)
        self.action_in = nn.Linear(action_dim, dim)
        self.pos = nn.Parameter(torch.randn(horizon + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads) for _ in range(layers))
        self.ln_out = nn.LayerNorm(dim)
        self.action_out = nn.Linear(dim, action_dim)

    def forward(self, x: Tensor, k: Tensor, cog: Tensor, per: Tensor) -> Tensor:
        cond = self.t_embed(timestep_sinusoid(k, self.freq_dim)) + self.cog_proj(cog)
        seq = torch.cat([cond[:, None], self.action_in(x)], dim=1) + self.pos
        context = self.per_proj(per)
        for block in self.blocks:
            seq = block(seq, context)
        return self.action_out(self.ln_out(seq[:, 1:]))


class DDIM(nn.Module):
    """Cosine-schedule forward process and a deterministic (eta = 0) DDIM sampler."""

    PREDICTIONS = ("epsilon", "sample", "v_prediction")

    def __init__(self, train_steps: int = 100, sample_steps: int = 10, prediction: str = "epsilon") -> None:
        super().__init__()
        if not 1 <= sample_steps <= train_steps:
            raise ValueError(f"need 1 <= sample_steps <= train_steps, got {sample_steps}, {train_steps}")
        if prediction not in self.PREDICTIONS:
            raise ValueError(f"prediction must be one of {self.PREDICTIONS}, got {prediction!r}")
        self.train_steps, self.sample_steps, self.prediction = train_steps, sample_steps, prediction
        # Not persistent: a function of the config, so it never needs to be in a checkpoint.
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(train_steps), persistent=False)

    def add_noise(self, x0: Tensor, noise: Tensor, k: Tensor) -> Tensor:
        ab = self.alphas_cumprod[k].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, k: Tensor) -> Tensor:
        """What the model regresses (diffusers' `prediction_type`): the noise ("epsilon"), the clean
        sample ("sample", x0) or the velocity sqrt(ab) * noise - sqrt(1 - ab) * x0 ("v_prediction")."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "sample":
            return x0
        ab = self.alphas_cumprod[k].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def to_x0_eps(self, out: Tensor, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The model's output at noisy `x` and step `k` -> (x0, noise) estimates."""
        ab = self.alphas_cumprod[k]
        if self.prediction == "epsilon":
            return (x - (1 - ab).sqrt() * out) / ab.sqrt(), out
        if self.prediction == "sample":
            return out, (x - ab.sqrt() * out) / (1 - ab).sqrt()
        x0 = ab.sqrt() * x - (1 - ab).sqrt() * out
        return x0, (1 - ab).sqrt() * x + ab.sqrt() * out

    def timesteps(self) -> list[int]:
        """Evenly spaced steps from the noisiest down to 0 ("leading" spacing, as diffusers)."""
        ratio = self.train_steps // self.sample_steps
        return [i * ratio for i in reversed(range(self.sample_steps))]

    @torch.no_grad()
    def sample(self, model_fn: Callable[[Tensor, Tensor], Tensor], noise: Tensor, clip: float = 1.0) -> Tensor:
        """Run DDIM from `noise`; `model_fn(x, k[B])` predicts `self.prediction` (the noise by
        default). x0 is clipped to the action range at every step (actions are in [-1, 1])."""
        x = noise
        steps = self.timesteps()
        for i, k in enumerate(steps):
            kk = torch.full((len(x),), k, dtype=torch.long, device=x.device)
            ab = self.alphas_cumprod[k]
            x0 = self.to_x0_eps(model_fn(x, kk), x, k)[0].clamp(-clip, clip)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # consistent with the clipped x0
            ab_prev = self.alphas_cumprod[steps[i + 1]] if i + 1 < len(steps) else x.new_tensor(1.0)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x
