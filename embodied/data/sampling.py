"""Training samples for memory policies: torch Datasets, samplers and a collate.

Every sample is a short sequence of T frames with these arrays (batched by `Collate` into
tensors [B, T, ...]):

    obs             key -> [T, ...]   the env's observation names; text as T strings
    action          [T, ...]          expert_action [T, ...] too when the dataset stores it
    reward          [T] float32       terminated / truncated [T] bool
    timestep        [T] int64         frame number in its episode (-1 on padding)
    episode_index   [T] int64         (-1 on padding)
    episode_start   [T] bool          True where an episode's first frame sits: reset memory there
    loss_mask       [T] bool          False on padding and on the burn-in prefix

* `WindowDataset`: contiguous windows starting at any frame (every `stride`-th). A window
  that runs past its episode's end is padded, or with `cross_episodes=True` continues into
  the next episode (`episode_start` marks where). `burn_in=B` masks the loss on the first
  B frames of a window that starts mid-episode (R2D2): the memory warms up on them. A window
  that starts at an episode's first frame has nothing to warm up from and keeps them.
* `EpisodeDataset`: whole episodes (T varies; `Collate` pads).
* `EpisodeChunkSampler` over a `WindowDataset(stride=window)`: truncated BPTT. Each batch
  row is a lane that walks its episodes chunk after chunk, in order, so a recurrent state
  carried from one batch to the next stays aligned (reset it where `episode_start`).
* `GroupDataset`: MemoryVLA-style groups: K frames of one episode in time order ending at
  a current frame, with their real timesteps.

Decoding happens in `__getitem__` and the optional `transform` (the policy's processor) runs
inside `Collate`, so with `DataLoader(num_workers>0)` both run in the workers. Randomness
comes from (seed, epoch, index) only: the same seed gives the same batches. Samplers take
`rank`/`world_size` and give ranks disjoint data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from embodied.data.source import EpisodeSource

PAD = -1  # a sampler index meaning "an all-padding sample" (EpisodeChunkSampler's idle lanes)
STEP_KEYS = ("action", "expert_action", "reward", "terminated", "truncated", "timestep")


class _Sequences(Dataset):
    def __init__(self, source: EpisodeSource, keys: Sequence[str] | None = None) -> None:
        self.source = source
        self.keys = list(keys) if keys is not None else None
        source._keys(self.keys)  # fail now on an unknown key

    def _assemble(self, segments: list[tuple[int, np.ndarray]], length: int, burn_in: int = 0) -> dict[str, Any]:
        """Read the (episode, frames) segments and lay them out as one sample of `length` frames."""
        parts = [self.source.read(e, f, self.keys) for e, f in segments if len(f)]
        n = sum(len(f) for _, f in segments)
        item = _concat(parts)
        item["episode_index"] = np.concatenate([np.full(len(f), e, np.int64) for e, f in segments if len(f)])
        item["episode_start"] = item["timestep"] == 0
        loss = np.ones(n, bool)
        if burn_in and item["timestep"][0] != 0:
            loss[:burn_in] = False
        item["loss_mask"] = loss
        return pad_item(item, length)

    def padding_item(self, length: int) -> dict[str, Any]:
        item = self._assemble([(0, np.zeros(1, np.int64))], 1)
        item = pad_item(item, length + 1)
        return _take(item, np.arange(1, length + 1))


class WindowDataset(_Sequences):
    """Windows of `window` frames starting at every `stride`-th frame of every episode."""

    def __init__(self, source: EpisodeSource, window: int, burn_in: int = 0, stride: int = 1,
                 cross_episodes: bool = False, keys: Sequence[str] | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 <= burn_in < window:
            raise ValueError(f"burn_in must be in [0, window - 1] = [0, {window - 1}], got {burn_in}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        super().__init__(source, keys)
        self.window, self.burn_in, self.stride, self.cross_episodes = window, burn_in, stride, cross_episodes
        lengths = source.episode_lengths
        self.index = _frame_index(lengths, stride)

    def __len__(self) -> int:
        return len(self.index)

    def windows_of(self, episode: int) -> np.ndarray:
        """Dataset indices of an episode's windows, in time order."""
        return np.flatnonzero(self.index[:, 0] == episode)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i == PAD:
            return self.padding_item(self.window)
        e, s = (int(v) for v in self.index[i])
        lengths = self.source.episode_lengths
        segments, remaining = [], self.window
        while remaining > 0 and e < len(lengths):
            take = min(remaining, int(lengths[e]) - s)
            segments.append((e, np.arange(s, s + take)))
            remaining -= take
            if not self.cross_episodes:
                break
            e, s = e + 1, 0
        return self._assemble(segments, self.window, self.burn_in)


class EpisodeDataset(_Sequences):
    """Whole episodes, one per sample (lengths differ; `Collate` pads to the longest)."""

    def __len__(self) -> int:
        return self.source.num_episodes

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = int(self.source.episode_lengths[i])
        return self._assemble([(i, np.arange(n))], n)


class GroupDataset(_Sequences):
    """One sample per frame t of every episode: `group_size` frames of t's episode in time
    order, ending at t; the others drawn without replacement from the `span` frames before
    t (the whole past when `span` is None). Too short a past is padded at the front."""

    def __init__(self, source: EpisodeSource, group_size: int, span: int | None = None, seed: int = 0,
                 keys: Sequence[str] | None = None) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if span is not None and span < group_size - 1:
            raise ValueError(f"span must be >= group_size - 1 = {group_size - 1}, got {span}")
        super().__init__(source, keys)
        self.group_size, self.span, self.seed, self.epoch = group_size, span, seed, 0
        lengths = source.episode_lengths
        self.index = _frame_index(lengths, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i == PAD:
            return self.padding_item(self.group_size)
        e, t = (int(v) for v in self.index[i])
        lo = 0 if self.span is None else max(0, t - self.span)
        past = np.arange(lo, t)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        k = min(self.group_size - 1, len(past))
        chosen = np.sort(rng.choice(past, size=k, replace=False)) if k else np.zeros(0, np.int64)
        frames = np.concatenate([chosen, [t]]).astype(np.int64)
        item = self._assemble([(e, frames)], len(frames))
        item["episode_start"] = item["timestep"] == 0
        if len(frames) < self.group_size:  # pad at the front: the current frame stays last
            item = pad_item(item, self.group_size, front=True)
        return item


def _frame_index(lengths: np.ndarray, stride: int) -> np.ndarray:
    """[(episode, frame)] for every `stride`-th frame of every episode, as an [N, 2] array."""
    starts = [np.arange(0, int(n), stride) for n in lengths]
    if not starts:
        return np.zeros((0, 2), np.int64)
    episodes = np.repeat(np.arange(len(lengths)), [len(s) for s in starts])
    return np.stack([episodes, np.concatenate(starts)], axis=1).astype(np.int64)


# ----------------------------------------------------------------------------- samplers
class ShardedSampler(Sampler[int]):
    """Indices of a dataset, shuffled by (seed, epoch), split across ranks without overlap.
    `drop_last=True` drops the remainder so every rank gets the same number (what DDP needs)."""

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True) -> None:
        _check_rank(rank, world_size)
        self.n = len(dataset)
        self.shuffle, self.seed, self.rank, self.world_size, self.drop_last = shuffle, seed, rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        if self.drop_last:
            idx = idx[: self.n - self.n % self.world_size]
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())


class EpisodeChunkSampler(Sampler[list[int]]):
    """Batches for truncated BPTT over a `WindowDataset` with `stride == window`: row b of
    every batch is lane b, which plays its episodes' windows in time order, one episode
    after another. Episodes are shuffled by (seed, epoch), dealt to ranks disjointly, then
    to the lane with the fewest windows so far; lanes that run dry get `PAD` (all-masked)
    samples, and every rank yields the same number of batches."""

    def __init__(self, dataset: WindowDataset, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if dataset.stride != dataset.window or dataset.cross_episodes or dataset.burn_in:
            raise ValueError("EpisodeChunkSampler needs WindowDataset(stride=window, cross_episodes=False, "
                             f"burn_in=0); got stride={dataset.stride}, window={dataset.window}, "
                             f"cross_episodes={dataset.cross_episodes}, burn_in={dataset.burn_in}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_rank(rank, world_size)
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _lanes(self) -> list[list[list[int]]]:
        n = self.dataset.source.num_episodes
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        per_rank = []
        for r in range(self.world_size):
            lanes: list[list[int]] = [[] for _ in range(self.batch_size)]
            for e in order[r :: self.world_size]:
                lane = min(range(self.batch_size), key=lambda b: (len(lanes[b]), b))
                lanes[lane] += self.dataset.windows_of(int(e)).tolist()
            per_rank.append(lanes)
        return per_rank

    def _batches(self) -> list[list[int]]:
        per_rank = self._lanes()
        steps = max((len(lane) for lanes in per_rank for lane in lanes), default=0)
        lanes = per_rank[self.rank]
        return [[lane[k] if k < len(lane) else PAD for lane in lanes] for k in range(steps)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size - 1] with world_size >= 1; got rank={rank}, "
                         f"world_size={world_size}")


# ----------------------------------------------------------------------------- collate
class Collate:
    """Stack samples into a batch of tensors [B, T, ...] (text: B lists of T strings),
    padding shorter samples at the end, then apply `transform` (tokenisation,
    normalisation: the policy's processor) to the batch. Picklable, so it runs in
    DataLoader workers."""

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.transform = transform

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("an empty batch")
        length = max(len(it["timestep"]) for it in items)
        items = [pad_item(it, length) for it in items]
        batch = {k: _stack([it[k] for it in items]) for k in items[0] if k != "obs"}
        batch["obs"] = {k: _stack([it["obs"][k] for it in items]) for k in items[0]["obs"]}
        return self.transform(batch) if self.transform is not None else batch


def _stack(values: list[np.ndarray]) -> Any:
    if values[0].dtype == object:
        return [list(v) for v in values]
    return torch.from_numpy(np.stack(values))


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "obs"}
    out["obs"] = {k: np.concatenate([p["obs"][k] for p in parts]) for k in parts[0]["obs"]}
    return out


def _take(item: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    out = {k: v[idx] for k, v in item.items() if k != "obs"}
    out["obs"] = {k: v[idx] for k, v in item["obs"].items()}
    return out


def pad_item(item: dict[str, Any], length: int, front: bool = False) -> dict[str, Any]:
    """Pad a sample to `length` frames: observations and actions repeat the nearest real
    frame; masks, flags and rewards are False/0; timestep and episode_index are -1."""
    n = len(item["timestep"])
    if n >= length:
        return item
    k = length - n
    src = np.concatenate([np.zeros(k, np.int64), np.arange(n)]) if front else \
        np.concatenate([np.arange(n), np.full(k, n - 1)])
    pad = np.concatenate([np.ones(k, bool), np.zeros(n, bool)]) if front else \
        np.concatenate([np.zeros(n, bool), np.ones(k, bool)])
    out = _take(item, src)
    for key, fill in (("timestep", -1), ("episode_index", -1), ("reward", 0), ("terminated", False),
                      ("truncated", False), ("episode_start", False), ("loss_mask", False)):
        if key in out:
            out[key] = out[key].copy()
            out[key][pad] = fill
    return out
