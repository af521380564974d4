"""Training batches as a pure function of (seed, step): what makes resume exact and ranks disjoint.

The global batch of step s is `batch_size` windows drawn with `numpy.random.default_rng([seed, s])`;
rank r of W trains on windows r, r + W, ... of it. A resumed run asks for the batches from its
checkpoint's step on and gets exactly what the uninterrupted run got; a 2-rank run sees the same
windows as one process with the same global batch.

A window is T consecutive frames of the dataset's episode stream starting at any frame and
running on into the next episode (`sampling=window`; `episode_start` marks where one begins), or
a whole episode (`sampling=episode`, `train.window` unused), or a MemoryVLA-style group
(`sampling=group`: `train.window` frames of one episode in time order, ending at any frame, each
with its real `timestep`); the collate pads to the longest sample of the batch. The first
`burn_in` steps of an episode already running when the window opens are excluded from the loss
(`loss_mask`, R2D2's burn-in: the memory warms up on them). Reading and preprocessing (decoding,
tokenisation, normalisation) run in DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from embodied.data.sampling import Collate, EpisodeChunkSampler, EpisodeDataset, GroupDataset, WindowDataset
from embodied.data.source import EpisodeSource
from embodied.policies.processor import PolicyProcessor


class StepBatches(Sampler[list[int]]):
    """Yields, for steps start, start+1, ..., this rank's slice of the step's global batch."""

    def __init__(self, starts: Sequence[int], batch_size: int, seed: int, start_step: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"train.batch_size {batch_size} must be divisible by the number of ranks {world_size}")
        if not len(starts):
            raise ValueError("the dataset has no window to sample (is it empty?)")
        self.starts, self.batch_size, self.seed = list(starts), batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def global_batch(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.starts), size=self.batch_size)
        return [int(self.starts[i]) for i in idx]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.global_batch(step)[self.rank :: self.world_size]
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62


class _ToTensors:
    """The collate's transform: the policy's processor on the observations, the target as `action`
    (picklable, so it runs in DataLoader workers)."""

    def __init__(self, processor: PolicyProcessor, target: str, skip_loss_when: dict[str, int]) -> None:
        self.processor, self.target, self.skip = processor, target, dict(skip_loss_when)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.target not in batch:
            raise KeyError(f"training target '{self.target}' is not in the dataset; present: {sorted(batch)}")
        mask = torch.as_tensor(batch["loss_mask"])
        for key, value in self.skip.items():
            mask = mask & (torch.as_tensor(np.asarray(batch["obs"][key])).reshape(mask.shape) != value)
        return {"obs": self.processor(batch["obs"]), "action": batch[self.target], "loss_mask": mask,
                "episode_start": batch["episode_start"], "timestep": batch["timestep"]}


Sequences = WindowDataset | EpisodeDataset | GroupDataset


def window_dataset(source: EpisodeSource, window: int, burn_in: int, sampling: str, keys: list[str],
                   group_span: int = 0, seed: int = 0) -> tuple[Sequences, np.ndarray]:
    """What to draw from: windows starting at every frame and running on into the next episode
    (`window`), whole episodes (`episode`; the collate pads to the batch's longest, so no compute
    goes to another episode's frames), or groups of `window` frames of one episode ending at every
    frame (`group`; which earlier frames a group holds is fixed by `seed` and the group's index)."""
    if sampling == "window":
        data = WindowDataset(source, window, burn_in=burn_in, cross_episodes=True, keys=keys)
        return data, np.arange(len(data))
    if sampling == "episode":
        return EpisodeDataset(source, keys=keys), np.arange(source.num_episodes)
    if sampling == "group":
        groups = GroupDataset(source, window, span=group_span or None, seed=seed, keys=keys)
        return groups, np.arange(len(groups))
    raise ValueError(f"train.sampling must be 'window', 'episode' or 'group', got '{sampling}'")


class LaneBatches:
    """Truncated BPTT: `EpisodeChunkSampler`'s lanes (row b walks its episodes window after
    window), epoch after epoch, as an endless stream that can start at any step: the batch of
    step s is the k-th of epoch e, where the epochs' lengths before it sum to s - k."""

    def __init__(self, data: WindowDataset, batch_size: int, seed: int, start_step: int, rank: int,
                 world_size: int) -> None:
        self.sampler = EpisodeChunkSampler(data, batch_size, shuffle=True, seed=seed, rank=rank,
                                           world_size=world_size)
        self.start_step = start_step

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = 0, self.start_step
        while True:
            self.sampler.set_epoch(epoch)
            batches = list(self.sampler)
            if not batches:
                raise ValueError("the dataset has no window to sample (is it empty?)")
            if skip >= len(batches):
                skip -= len(batches)
            else:
                yield from batches[skip:]
                skip = 0
            epoch += 1


def make_batches(source: EpisodeSource, processor: PolicyProcessor, *, window: int, burn_in: int,
                 batch_size: int, seed: int, sampling: str, target: str, num_workers: int,
                 skip_loss_when: dict[str, int] | None = None, group_span: int = 0):
    """A `(start_step, rank, world_size) -> iterator of tensor batches` function for the loop."""
    skip = dict(skip_loss_when or {})
    unknown = sorted(set(skip) - set(source.observation_space.spaces))
    if unknown:
        raise ValueError(f"train.skip_loss_when names {unknown}, which are not observations of the dataset; "
                         f"observations: {sorted(source.observation_space.spaces)}")
    keys = sorted(set(processor.spec) | set(skip))
    if sampling == "tbptt":
        data: Sequences = WindowDataset(source, window, stride=window, keys=keys)
    else:
        data, starts = window_dataset(source, window, burn_in, sampling, keys, group_span, seed)

    def batches(start_step: int, rank: int, world_size: int) -> Iterator[dict[str, Any]]:
        if sampling == "tbptt":  # lanes per rank: batch_size / world_size rows each, as for windows
            if batch_size % world_size:
                raise ValueError(f"train.batch_size {batch_size} must be divisible by the number of ranks "
                                 f"{world_size}")
            sampler: Any = LaneBatches(data, batch_size // world_size, seed, start_step, rank, world_size)
        else:
            sampler = StepBatches(starts, batch_size, seed, start_step, rank, world_size)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=Collate(_ToTensors(processor, target, skip)),
                            num_workers=num_workers, persistent_workers=num_workers > 0,
                            prefetch_factor=4 if num_workers > 0 else None)
        return iter(loader)

    return batches
