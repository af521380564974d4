"""Training batches as a pure function of (seed, step): what makes resume exact and ranks disjoint.

The global batch of step s is `batch_size` windows drawn with `numpy.random.default_rng([seed, s])`;
rank r of W trains on windows r, r + W, ... of it. A resumed run asks for the batches from its
checkpoint's step on and gets exactly what the uninterrupted run got; a 2-rank run sees the same
windows as one process with the same global batch.

A window is T consecutive frames of the dataset's episode stream starting at any frame
(`sampling=window`) or at an episode's first frame (`sampling=episode`); it may run into the next
episode (`episode_start` marks where one begins) and is padded at the end of the data. The first
`burn_in` steps of an episode already running when the window opens are excluded from the loss
(`loss_mask`, R2D2's burn-in: the memory warms up on them). Reading and preprocessing (decoding,
tokenisation, normalisation) run in DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from embodied.data.reader import EpisodeSource
from embodied.policies.processor import PolicyProcessor

Window = int  # a window is named by the global index of its first frame


class WindowReader:
    """Cuts windows out of an `EpisodeSource`'s episode stream."""

    def __init__(self, source: EpisodeSource, window: int, burn_in: int = 0) -> None:
        self.source, self.window, self.burn_in = source, int(window), int(burn_in)
        lengths = np.asarray(source.episode_lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])  # global index of each episode's frame 0

    def starts(self, sampling: str) -> np.ndarray:
        if sampling == "window":
            return np.arange(self.offsets[-1])
        if sampling == "episode":
            return self.offsets[:-1].copy()
        raise ValueError(f"sampling must be 'window' or 'episode', got '{sampling}'")

    def read(self, start: Window) -> dict[str, Any]:
        """Frames [start, start + T) of the stream: `obs`, `action`, `expert_action` (when stored),
        `episode_start`, `loss_mask`, `timestep` [T] (padding repeats the last frame, masked out)."""
        t_len, total = self.window, int(self.offsets[-1])
        parts, g = [], int(start)
        while g < min(start + t_len, total):
            ep = int(np.searchsorted(self.offsets, g, side="right") - 1)
            first = g - int(self.offsets[ep])
            n = min(int(self.offsets[ep + 1]) - g, start + t_len - g)
            parts.append(self.source.read(ep, np.arange(first, first + n)))
            g += n
        sample = _concat(parts)
        valid = len(sample["action"])
        obs = {k: _pad(v, t_len) for k, v in sample.pop("obs").items()}
        sample = {k: _pad(v, t_len) for k, v in sample.items()}
        sample["obs"] = obs
        start_flags = np.zeros(t_len, dtype=bool)
        start_flags[:valid] = sample["timestep"][:valid] == 0
        mask = np.arange(t_len) < valid
        if not start_flags[0]:  # burn-in only for the episode already running when the window opens
            first_start = int(np.argmax(start_flags)) if start_flags.any() else t_len
            mask[: min(self.burn_in, first_start)] = False
        sample["episode_start"], sample["loss_mask"] = start_flags, mask
        return sample


def window_starts(reader: WindowReader, sampling: str) -> np.ndarray:
    return reader.starts(sampling)


def collate_windows(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-window samples into [B, T, ...] arrays (text stays an object array)."""
    out: dict[str, Any] = {k: np.stack([s[k] for s in samples]) for k in samples[0] if k != "obs"}
    out["obs"] = {k: np.stack([s["obs"][k] for s in samples]) for k in samples[0]["obs"]}
    return out


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "obs"}
    out["obs"] = {k: np.concatenate([p["obs"][k] for p in parts]) for k in parts[0]["obs"]}
    return out


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    if len(x) >= length:
        return x
    return np.concatenate([x, np.repeat(x[-1:], length - len(x), axis=0)])


class StepBatches(Sampler[list[Window]]):
    """Yields, for steps start, start+1, ..., this rank's slice of the step's global batch."""

    def __init__(self, starts: Sequence[Window], batch_size: int, seed: int, start_step: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"train.batch_size {batch_size} must be divisible by the number of ranks {world_size}")
        if not len(starts):
            raise ValueError("the dataset has no window to sample (is it empty?)")
        self.starts, self.batch_size, self.seed = list(starts), batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def global_batch(self, step: int) -> list[Window]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.starts), size=self.batch_size)
        return [self.starts[i] for i in idx]

    def __iter__(self) -> Iterator[list[Window]]:
        step = self.start_step
        while True:
            yield self.global_batch(step)[self.rank :: self.world_size]
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62


class _WindowDataset(Dataset):
    """Map-style view for the DataLoader: a `Window` -> its sample (read in the worker)."""

    def __init__(self, reader: WindowReader) -> None:
        self.reader = reader

    def __getitem__(self, window: Window) -> dict[str, Any]:
        return self.reader.read(window)

    def __len__(self) -> int:
        return self.reader.source.num_frames


class _Collate:
    """Stack samples and run the policy's processor on the observations (picklable for workers)."""

    def __init__(self, processor: PolicyProcessor, target: str) -> None:
        self.processor, self.target = processor, target

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_windows(samples)
        if self.target not in batch:
            raise KeyError(f"train.target '{self.target}' is not in the dataset; present: {sorted(batch)}")
        return {"obs": self.processor(batch["obs"]), "action": torch.as_tensor(batch[self.target]),
                "loss_mask": torch.as_tensor(batch["loss_mask"]),
                "episode_start": torch.as_tensor(batch["episode_start"]),
                "timestep": torch.as_tensor(batch["timestep"])}


def make_batches(reader: WindowReader, processor: PolicyProcessor, *, batch_size: int, seed: int,
                 sampling: str, target: str, num_workers: int):
    """A `(start_step, rank, world_size) -> iterator of tensor batches` function for the loop."""
    starts = window_starts(reader, sampling)

    def batches(start_step: int, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
        sampler = StepBatches(starts, batch_size, seed, start_step, rank, world_size)
        loader = DataLoader(_WindowDataset(reader), batch_sampler=sampler, collate_fn=_Collate(processor, target),
                            num_workers=num_workers, persistent_workers=num_workers > 0,
                            prefetch_factor=4 if num_workers > 0 else None)
        return iter(loader)

    return batches
