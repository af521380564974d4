"""Training samples from a real on-disk dataset: windows (episode_start, burn-in, padding,
crossing episodes), whole episodes, TBPTT lanes, groups, disjoint ranks, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.utils.data import DataLoader

from embodied.data import (
    PAD,
    Collate,
    DatasetWriter,
    EpisodeChunkSampler,
    EpisodeDataset,
    GroupDataset,
    ShardedSampler,
    WindowDataset,
    open_dataset,
)

LENGTHS = [5, 8, 3, 6]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ds")
    space = spaces.Dict({"rgb": spaces.Box(0, 255, (8, 8, 3), np.uint8),
                         "gps": spaces.Box(-1e3, 1e3, (2,), np.float32),
                         "instruction": spaces.Text(32, charset="abcdefghijklmnopqrstuvwxyz ")})
    w = DatasetWriter(root, space, spaces.Box(-1.0, 1.0, (2,), np.float32), fps=10)
    for e, t in enumerate(LENGTHS):
        # gps encodes (episode, frame) so every sample can be checked against where it came from
        gps = np.stack([np.full(t, e), np.arange(t)], 1).astype(np.float32)
        rgb = np.full((t, 8, 8, 3), 40 * e, np.uint8)
        w.add_episode({"rgb": rgb, "gps": gps, "instruction": [f"task {'abcd'[e]}"] * t},
                      gps / 10, terminated=np.arange(t) == t - 1)
    return open_dataset(root)


def where(item) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in item["obs"]["gps"]]


def test_window_inside_an_episode(source) -> None:
    ds = WindowDataset(source, window=4)
    assert len(ds) == sum(LENGTHS)  # a window starts at every frame
    i = int(np.flatnonzero((ds.index == [1, 2]).all(1))[0])
    it = ds[i]
    assert where(it) == [(1, 2), (1, 3), (1, 4), (1, 5)]
    assert it["timestep"].tolist() == [2, 3, 4, 5] and it["episode_index"].tolist() == [1] * 4
    assert it["episode_start"].tolist() == [False] * 4 and it["loss_mask"].all()
    assert it["obs"]["instruction"].tolist() == ["task b"] * 4
    assert np.allclose(it["action"], it["obs"]["gps"] / 10)


def test_window_padding_past_the_episode_end(source) -> None:
    ds = WindowDataset(source, window=4)
    it = ds[int(np.flatnonzero((ds.index == [0, 3]).all(1))[0])]
    assert it["timestep"].tolist() == [3, 4, -1, -1] and it["loss_mask"].tolist() == [True, True, False, False]
    assert it["episode_index"].tolist() == [0, 0, -1, -1] and not it["episode_start"].any()
    assert it["terminated"].tolist() == [False, True, False, False]


def test_window_across_episodes_marks_the_reset(source) -> None:
    ds = WindowDataset(source, window=6, cross_episodes=True)
    it = ds[int(np.flatnonzero((ds.index == [1, 5]).all(1))[0])]
    assert where(it) == [(1, 5), (1, 6), (1, 7), (2, 0), (2, 1), (2, 2)]
    assert it["episode_start"].tolist() == [False, False, False, True, False, False]
    assert it["timestep"].tolist() == [5, 6, 7, 0, 1, 2] and it["loss_mask"].all()
    last = ds[len(ds) - 1]  # the dataset's last frame: padded after it
    assert last["timestep"].tolist() == [5, -1, -1, -1, -1, -1]


def test_burn_in_masks_the_prefix_of_a_mid_episode_window(source) -> None:
    ds = WindowDataset(source, window=5, burn_in=2)
    mid = ds[int(np.flatnonzero((ds.index == [1, 1]).all(1))[0])]
    assert mid["loss_mask"].tolist() == [False, False, True, True, True]
    first = ds[int(np.flatnonzero((ds.index == [1, 0]).all(1))[0])]
    assert first["episode_start"].tolist() == [True, False, False, False, False]
    assert first["loss_mask"].all()  # nothing to warm up from at an episode's start
    with pytest.raises(ValueError, match=r"burn_in must be in \[0, window - 1\]"):
        WindowDataset(source, window=3, burn_in=3)


def test_whole_episodes_padded_by_collate(source) -> None:
    ds = EpisodeDataset(source)
    batch = Collate()([ds[2], ds[1]])
    assert batch["timestep"].shape == (2, 8) and batch["obs"]["rgb"].shape == (2, 8, 8, 8, 3)
    assert batch["loss_mask"].sum(1).tolist() == [3, 8]
    assert batch["episode_start"][:, 0].all() and batch["obs"]["instruction"][0] == ["task c"] * 8
    assert batch["obs"]["rgb"].dtype == torch.uint8 and batch["action"].dtype == torch.float32


def test_group_frames_in_order_with_real_timesteps(source) -> None:
    ds = GroupDataset(source, group_size=3, span=4, seed=7)
    for i in range(len(ds)):
        e, t = ds.index[i]
        it = ds[i]
        real = it["timestep"][it["timestep"] >= 0]
        assert real[-1] == t and np.all(np.diff(real) > 0) and real[0] >= t - 4
        assert it["timestep"][-1] == t and len(it["timestep"]) == 3
        real_rows = np.flatnonzero(it["timestep"] >= 0)
        assert [where(it)[r] for r in real_rows] == [(int(e), int(s)) for s in real]
        assert it["loss_mask"].tolist() == (it["timestep"] >= 0).tolist()
        assert it["episode_start"].tolist() == (it["timestep"] == 0).tolist()
    assert ds[0]["timestep"].tolist() == [-1, -1, 0]  # no past yet: padded at the front
    draws = [ds[12]["timestep"].tolist() for _ in range(2)]
    assert draws[0] == draws[1]  # a function of (seed, epoch, index)
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        seen.add(tuple(ds[12]["timestep"].tolist()))
    assert len(seen) > 1


def test_sharded_sampler_disjoint_and_deterministic(source) -> None:
    ds = WindowDataset(source, window=2)
    shards = [list(ShardedSampler(ds, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == len(ds) // 3 for s in shards)
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat))
    assert list(ShardedSampler(ds, seed=3, rank=1, world_size=3)) == shards[1]
    other = ShardedSampler(ds, seed=3, rank=1, world_size=3)
    other.set_epoch(1)
    assert list(other) != shards[1]
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedSampler(ds, rank=2, world_size=2)


def test_tbptt_lanes_play_episodes_in_order(source) -> None:
    ds = WindowDataset(source, window=3, stride=3)
    sampler = EpisodeChunkSampler(ds, batch_size=2, seed=0)
    batches = list(sampler)
    lanes = [[b[k] for b in batches] for k in range(2)]
    seen = []
    for lane in lanes:
        prev = None
        for i in lane:
            if i == PAD:
                continue
            e, s = ds.index[i]
            if prev is not None and prev[0] == e:
                assert s == prev[1] + 3  # consecutive chunks of one episode
            else:
                assert s == 0  # a new episode starts at its first frame
                seen.append(int(e))
            prev = (e, s)
    assert sorted(seen) == list(range(len(LENGTHS)))
    pad = ds[PAD]
    assert not pad["loss_mask"].any() and not pad["episode_start"].any()
    # ranks: disjoint episodes, the same number of batches
    parts = [EpisodeChunkSampler(ds, batch_size=1, seed=0, rank=r, world_size=2) for r in range(2)]
    eps = [{int(ds.index[i][0]) for b in p for i in b if i != PAD} for p in parts]
    assert not eps[0] & eps[1] and eps[0] | eps[1] == set(range(len(LENGTHS)))
    assert len(parts[0]) == len(parts[1])


class Tokenise:
    """A stand-in processor: text -> ids, pixels -> float (runs in the workers)."""

    def __call__(self, batch):
        batch["obs"]["instruction"] = torch.tensor([[ord(s[-1]) for s in row] for row in batch["obs"]["instruction"]])
        batch["obs"]["rgb"] = batch["obs"]["rgb"].float() / 255
        batch["worker"] = torch.utils.data.get_worker_info().id
        return batch


def test_dataloader_workers_decode_and_transform(source) -> None:
    ds = WindowDataset(source, window=4, burn_in=1)

    def run() -> list:
        loader = DataLoader(ds, batch_size=4, sampler=ShardedSampler(ds, seed=1), collate_fn=Collate(Tokenise()),
                            num_workers=2)
        return list(loader)

    batches = run()
    assert {b["worker"] for b in batches} == {0, 1}
    b = batches[0]
    assert b["obs"]["rgb"].dtype == torch.float32 and b["obs"]["instruction"].shape == (4, 4)
    assert b["loss_mask"].dtype == torch.bool and b["timestep"].dtype == torch.int64
    again = run()
    assert all(torch.equal(x["obs"]["gps"], y["obs"]["gps"]) for x, y in zip(batches, again))


def test_unknown_keys_are_named(source) -> None:
    with pytest.raises(KeyError, match=r"\['depth'\] are not in this dataset"):
        WindowDataset(source, window=2, keys=["depth"])
    ds = WindowDataset(source, window=2, keys=["gps"])
    assert set(ds[0]["obs"]) == {"gps"}

