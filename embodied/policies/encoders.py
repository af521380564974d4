"""Small from-scratch encoders, built from the observation space.

`ObservationSpec` records, per observation key, what kind of input it is (image, vector,
discrete, text); it is derived from a Gymnasium space once and saved in the policy's
`config.json`, so a checkpoint rebuilds its encoders without the environment.
`ObservationEncoder` turns a batch of observations into one feature vector per row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

PAD, UNK = 0, 1
_WORD = re.compile(r"[a-z]+|[0-9]+")


@dataclass
class KeySpec:
    kind: str  # image | vector | discrete | text
    shape: list[int] = field(default_factory=list)
    n: int = 0  # discrete: number of values; text: max tokens
    scale: float = 1.0  # images: divide by this (255 for uint8, max depth for depth)


def observation_spec(space: spaces.Dict, keys: Iterable[str] | None = None) -> dict[str, KeySpec]:
    """Describe the keys a policy reads. Privileged keys (`expert_action`) are never inputs."""
    keys = [k for k in (keys or space.spaces) if k != "expert_action"]
    out: dict[str, KeySpec] = {}
    for key in keys:
        sub = space[key]
        if isinstance(sub, spaces.Box) and len(sub.shape) == 3:
            scale = 255.0 if sub.dtype == np.uint8 else float(np.max(sub.high))
            out[key] = KeySpec("image", list(sub.shape), scale=scale)
        elif isinstance(sub, spaces.Box) and len(sub.shape) == 2:
            continue  # per-pixel label maps (semantic) are not fed to the small encoders
        elif isinstance(sub, spaces.Box):
            out[key] = KeySpec("vector", list(sub.shape))
        elif isinstance(sub, spaces.Discrete):
            out[key] = KeySpec("discrete", n=int(sub.n))
        elif isinstance(sub, spaces.Text):
            out[key] = KeySpec("text", n=64)
        else:
            raise TypeError(f"observation '{key}': unsupported space {sub}")
    return out


class WordTokenizer:
    """A word vocabulary built from the dataset's instructions (lower-cased words, digits)."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> WordTokenizer:
        words = sorted({w for t in texts for w in _WORD.findall(t.lower())})
        return cls(["<pad>", "<unk>", *words])

    def encode(self, texts: Iterable[str], max_len: int) -> torch.Tensor:
        rows = []
        for t in texts:
            ids = [self.index.get(w, UNK) for w in _WORD.findall(str(t).lower())][:max_len]
            rows.append(ids + [PAD] * (max_len - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


class ConvEncoder(nn.Module):
    """A small CNN for RGB, depth or RGB-D images at any resolution (global average pool)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, dim, 3, stride=1, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] in [0, 1]
        return self.net(x)


class TextEncoder(nn.Module):
    """Mean of word embeddings plus a GRU summary (order matters in instructions)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        lengths = (ids != PAD).sum(1).clamp(min=1)
        _, h = self.gru(nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False))
        return h[-1]


class ObservationEncoder(nn.Module):
    """One encoder per observation key; features are concatenated and projected to `dim`.

    Inputs arrive preprocessed by `PolicyProcessor` (vector keys already normalised with the
    training data's statistics, text as token ids); images are scaled here, on the device.
    """

    def __init__(self, spec: dict[str, KeySpec], dim: int, vocab_size: int = 2) -> None:
        super().__init__()
        self.spec = spec
        self.encoders = nn.ModuleDict()
        for key, s in spec.items():
            if s.kind == "image":
                self.encoders[key] = ConvEncoder(s.shape[-1], dim)
            elif s.kind == "vector":
                self.encoders[key] = nn.Sequential(nn.Linear(int(np.prod(s.shape)), dim), nn.GELU())
            elif s.kind == "discrete":
                self.encoders[key] = nn.Embedding(s.n, dim)
            elif s.kind == "text":
                self.encoders[key] = TextEncoder(vocab_size, dim)
        self.project = nn.Sequential(nn.Linear(dim * len(spec), dim), nn.LayerNorm(dim))

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = []
        for key, s in self.spec.items():
            x = obs[key]
            if s.kind == "image":
                x = x.float().movedim(-1, 1) / s.scale
            elif s.kind == "vector":
                x = x.float().flatten(1)
            elif s.kind == "discrete":
                x = x.long().view(-1)
            feats.append(self.encoders[key](x))
        return self.project(torch.cat(feats, dim=-1))
