"""`PolicyProcessor`: raw observations (numpy, str) -> the tensors a policy's model reads.

It does what needs no weights: tokenisation of text keys, normalisation of vector keys with
the dataset's statistics, dtype conversion. Keeping it out of the model lets DataLoader
workers run it during training (the model then sees ready tensors), and it is the same
object `act` calls during rollouts, so training and acting preprocess identically.

Saved beside the weights as `policy_preprocessor.json` (keys, kinds) and
`policy_preprocessor.safetensors` (the statistics), the pair LeRobot's checkpoints carry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from embodied.policies.encoders import KeySpec, WordTokenizer

PROCESSOR_CONFIG, PROCESSOR_STATS = "policy_preprocessor.json", "policy_preprocessor.safetensors"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or does not fit the policy; names the file."""


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file and rename it over `path` (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class PolicyProcessor:
    """Observation preprocessing shared by training (in DataLoader workers) and acting."""

    def __init__(self, spec: dict[str, KeySpec], tokenizer: WordTokenizer) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.stats: dict[str, tuple[Tensor, Tensor]] = {}  # vector key -> (mean, std), float32, flat

    def set_stats(self, stats: dict[str, tuple[Any, Any]]) -> None:
        """{key: (mean, std)} for vector keys (others are ignored: images are scaled in the model)."""
        for key, (mean, std) in stats.items():
            spec = self.spec.get(key)
            if spec is None or spec.kind != "vector":
                continue
            size = int(np.prod(spec.shape))
            mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32)).flatten()
            std_t = torch.as_tensor(np.asarray(std, dtype=np.float32)).flatten().clamp(min=1e-6)
            if mean_t.numel() != size or std_t.numel() != size:
                raise ValueError(f"statistics for '{key}' have {mean_t.numel()} values, the observation has {size}")
            self.stats[key] = (mean_t, std_t)

    def __call__(self, obs: dict[str, Any], keys: list[str] | None = None) -> dict[str, Tensor]:
        """Observations with any leading axes ([N, ...] or [B, T, ...]) -> CPU tensors of the spec's
        keys (or of `keys`, a subset)."""
        out: dict[str, Tensor] = {}
        for key in self.spec if keys is None else keys:
            spec = self.spec[key]
            if key not in obs:
                raise KeyError(f"observation '{key}' is missing; present: {sorted(obs)}")
            value = obs[key]
            if spec.kind == "text":
                texts = np.asarray(value, dtype=object)
                ids = self.tokenizer.encode([str(t) for t in texts.reshape(-1)], spec.n)
                out[key] = ids.view(*texts.shape, spec.n)
            elif spec.kind == "vector":
                x = torch.as_tensor(np.asarray(value, dtype=np.float32))
                lead = x.shape[: x.dim() - len(spec.shape)] if spec.shape else x.shape
                x = x.reshape(*lead, -1)
                if key in self.stats:
                    mean, std = self.stats[key]
                    x = (x - mean) / std
                out[key] = x
            else:  # images stay in their dtype (uint8 moves 4x cheaper to a device); discrete as int64
                arr = np.asarray(value)
                out[key] = torch.as_tensor(arr.astype(np.int64) if spec.kind == "discrete" else arr)
        return out

    # ------------------------------------------------------------------ files
    def save(self, directory: Path) -> None:
        config = {"steps": ["tokenize_text", "normalize_vectors", "to_tensor"], "keys": sorted(self.spec),
                  "normalized": sorted(self.stats)}
        atomic_write(directory / PROCESSOR_CONFIG, lambda p: p.write_text(json.dumps(config, indent=2)))
        tensors = {}
        for key, (mean, std) in self.stats.items():
            tensors[f"{key}.mean"] = mean.contiguous()
            tensors[f"{key}.std"] = std.contiguous()
        atomic_write(directory / PROCESSOR_STATS, lambda p: save_file(tensors, str(p)))

    def load(self, directory: Path) -> None:
        path = directory / PROCESSOR_STATS
        if not path.exists():
            raise CheckpointError(f"{path}: missing (the processor statistics saved with the weights)")
        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises several types for corrupt headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
        keys = {name.rsplit(".", 1)[0] for name in tensors}
        stats = {}
        for key in keys:
            if f"{key}.mean" not in tensors or f"{key}.std" not in tensors:
                raise CheckpointError(f"{path}: '{key}' needs both '{key}.mean' and '{key}.std'")
            stats[key] = (tensors[f"{key}.mean"].numpy(), tensors[f"{key}.std"].numpy())
        unknown = sorted(k for k in keys if k not in self.spec or self.spec[k].kind != "vector")
        if unknown:
            raise CheckpointError(f"{path}: statistics for {unknown}, which are not vector observations of this policy")
        try:
            self.set_stats(stats)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from e
