"""embodied.data on disk: writer -> reader round trip, append/reopen, stats, crash leftovers,
corrupt-file errors, and the LIBERO HDF5 reader behind the same API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from gymnasium import spaces

from embodied.data import DatasetError, DatasetWriter, open_dataset
from embodied.data.format import CHUNKS_SIZE, INFO

CHARSET = "abcdefghijklmnopqrstuvwxyz "


def obs_space(h: int = 16) -> spaces.Dict:
    return spaces.Dict({
        "rgb": spaces.Box(0, 255, (h, h, 3), np.uint8),
        "depth": spaces.Box(0.0, 10.0, (h, h, 1), np.float32),
        "gps": spaces.Box(-50.0, 50.0, (2,), np.float32),
        "instruction": spaces.Text(64, charset=CHARSET),
        "phase": spaces.Discrete(2),
        "expert_action": spaces.Discrete(4),
    })


def make_episode(rng: np.random.Generator, t: int, h: int = 16) -> tuple[dict, np.ndarray]:
    """Smooth frames (a gradient plus a per-frame level) that a video codec keeps close."""
    ramp = np.linspace(0, 120, h, dtype=np.float64)
    level = rng.permutation(np.arange(t) * 100 // max(t - 1, 1))
    rgb = np.stack([np.clip(ramp[None, :, None] + ramp[:, None, None] * 0 + lv, 0, 255)
                    .repeat(h, 0)[:h].repeat(3, 2) for lv in level]).astype(np.uint8)
    obs = {
        "rgb": rgb,
        "depth": (rng.random((t, h, h, 1)) * 10).astype(np.float32),
        "gps": rng.normal(size=(t, 2)).astype(np.float32),
        "instruction": ["find the chair" if i < t // 2 else "now stop" for i in range(t)],
        "phase": np.arange(t) % 2,
        "expert_action": rng.integers(0, 4, t),
    }
    return obs, rng.integers(0, 4, t)


def write(root: Path, lengths: list[int], seed: int = 0) -> list[tuple[dict, np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = DatasetWriter(root, obs_space(), spaces.Discrete(4), fps=10, env={"name": "toy", "options": {"a": 1}})
    out = []
    for k, t in enumerate(lengths):
        obs, act = make_episode(rng, t)
        term = np.zeros(t, bool)
        term[-1] = k % 2 == 0
        w.add_episode(obs, act, np.arange(t, dtype=np.float32), term, ~term & (np.arange(t) == t - 1),
                      seed=100 + k, scene=f"scene-{k}", init_state=k, episode_id=f"ep-{k}", metrics={"success": 1.0})
        out.append((obs, act))
    return out


def test_round_trip_frames_actions_tasks_depth(tmp_path: Path) -> None:
    episodes = write(tmp_path, [6, 9, 4])
    src = open_dataset(tmp_path)
    assert src.num_episodes == 3 and src.episode_lengths.tolist() == [6, 9, 4] and src.fps == 10
    assert src.tasks == ["find the chair", "now stop"]
    assert set(src.observation_space.spaces) == {"rgb", "depth", "gps", "instruction", "phase"}
    assert src.action_space == spaces.Discrete(4) and src.has_expert_action
    assert src.env == {"name": "toy", "options": {"a": 1}}
    for e, (obs, act) in enumerate(episodes):
        ep = src.read(e)
        assert np.array_equal(ep["obs"]["depth"], obs["depth"]) and ep["obs"]["depth"].dtype == np.float32
        assert np.array_equal(ep["obs"]["gps"], obs["gps"])
        assert np.array_equal(ep["action"], act) and np.array_equal(ep["expert_action"], obs["expert_action"])
        assert ep["obs"]["instruction"].tolist() == obs["instruction"]
        assert np.array_equal(ep["obs"]["phase"], obs["phase"])
        err = np.abs(ep["obs"]["rgb"].astype(int) - obs["rgb"].astype(int)).mean(axis=(1, 2, 3))
        assert err.max() < 3.0, err  # lossy video, but each frame is its own (levels differ by >= 10)
        assert ep["timestep"].tolist() == list(range(len(act)))
        assert ep["reward"].tolist() == list(range(len(act)))
        assert ep["terminated"][-1] == (e % 2 == 0) and ep["truncated"][-1] == (e % 2 == 1)
        assert not ep["terminated"][:-1].any() and not ep["truncated"][:-1].any()
        info = src.episode_info(e)
        assert (info["seed"], info["scene"], info["init_state"], info["episode_id"]) == (100 + e, f"scene-{e}", e,
                                                                                          f"ep-{e}")
    # a few frames, out of order, decode to the same frames
    obs, _ = episodes[1]
    part = src.read(1, frames=np.array([7, 2, 5]), keys=["rgb", "instruction"])
    assert set(part["obs"]) == {"rgb", "instruction"} and part["timestep"].tolist() == [7, 2, 5]
    assert np.abs(part["obs"]["rgb"].astype(int) - obs["rgb"][[7, 2, 5]]).mean() < 3.0


def test_decoded_video_cache_returns_the_frames_asked_for_within_its_budget(tmp_path: Path) -> None:
    episodes = write(tmp_path, [6, 9, 4])
    cached, direct = open_dataset(tmp_path), open_dataset(tmp_path)
    direct.video_cache_bytes = 0  # every read seeks and decodes only its own frames
    cached.video_cache_bytes = 16 * 16 * 3 * 9 + 16 * 16 * 3 * 4  # episodes 1 and 2, not 0 as well
    rng = np.random.default_rng(0)
    for _ in range(30):
        e = int(rng.integers(3))
        frames = rng.choice(len(episodes[e][1]), size=int(rng.integers(1, 4)), replace=False)
        got = cached.read(e, frames=frames, keys=["rgb"])["obs"]["rgb"]
        assert np.array_equal(got, direct.read(e, frames=frames, keys=["rgb"])["obs"]["rgb"])
        err = np.abs(got.astype(int) - episodes[e][0]["rgb"][frames]).mean(axis=(1, 2, 3))
        assert err.max() < 3.0, err
        got[:] = 0  # the caller owns what it got: the cache is not written through
        assert sum(v.nbytes for v in cached._videos.values()) <= cached.video_cache_bytes
    assert cached._videos  # it did cache


def test_layout_is_lerobot_v3(tmp_path: Path) -> None:
    write(tmp_path, [3, 2])
    info = json.loads((tmp_path / INFO).read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 5
    assert info["features"]["observation.images.rgb"]["dtype"] == "video"
    assert info["features"]["observation.depth"] == {"dtype": "float32", "shape": [16, 16, 1], "names": None}
    assert info["features"]["expert_action"]["dtype"] == "int64"
    for rel in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-001.parquet", "videos/observation.images.rgb/chunk-000/file-001.mp4",
                "meta/embodied.json"):
        assert (tmp_path / rel).exists(), rel
    rows = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 3), (3, 5)]
    frames = pq.read_table(tmp_path / "data/chunk-000/file-001.parquet").to_pydict()
    assert frames["index"] == [3, 4] and frames["episode_index"] == [1, 1] and frames["frame_index"] == [0, 1]
    assert frames["timestamp"] == [0.0, pytest.approx(0.1)]


def test_stats_accumulate_over_commits_and_reopen(tmp_path: Path) -> None:
    episodes = write(tmp_path, [5, 7])
    w = DatasetWriter(tmp_path)  # reopen: appends after the last commit
    obs, act = make_episode(np.random.default_rng(9), 4)
    assert w.add_episode(obs, act, seed=7) == 2
    episodes.append((obs, act))
    stats = json.loads((tmp_path / "meta/stats.json").read_text())
    gps = np.concatenate([o["gps"] for o, _ in episodes]).astype(np.float64)
    assert np.allclose(stats["observation.gps"]["mean"], gps.mean(0), atol=1e-6)
    assert np.allclose(stats["observation.gps"]["std"], gps.std(0), atol=1e-6)
    assert np.allclose(stats["observation.gps"]["min"], gps.min(0)) and stats["observation.gps"]["count"] == [16]
    depth = np.concatenate([o["depth"] for o, _ in episodes]).astype(np.float64)
    assert np.allclose(np.ravel(stats["observation.depth"]["mean"]), depth.mean(), atol=1e-5)
    rgb = np.concatenate([o["rgb"] for o, _ in episodes]).astype(np.float64) / 255
    assert np.asarray(stats["observation.images.rgb"]["mean"]).shape == (3, 1, 1)
    assert np.allclose(np.ravel(stats["observation.images.rgb"]["mean"]), rgb.mean(axis=(0, 1, 2)), atol=1e-6)
    src = open_dataset(tmp_path)
    assert src.num_episodes == 3 and src.episode_info(2)["seed"] == 7
    assert np.allclose(src.stats["gps"]["mean"], gps.mean(0), atol=1e-6)
    assert np.array_equal(src.read(2)["obs"]["depth"], obs["depth"])


def test_reopen_rejects_other_spaces_and_missing_keys(tmp_path: Path) -> None:
    write(tmp_path, [2])
    other = obs_space()
    other.spaces["gps"] = spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(DatasetError, match=r"embodied.json: observation_space differs .* \['gps'\]"):
        DatasetWriter(tmp_path, other, spaces.Discrete(4), fps=10)
    with pytest.raises(DatasetError, match="fps is 10"):
        DatasetWriter(tmp_path, obs_space(), spaces.Discrete(4), fps=20)
    w = DatasetWriter(tmp_path)
    obs, act = make_episode(np.random.default_rng(0), 3)
    del obs["gps"]
    with pytest.raises(DatasetError, match=r"missing keys \['gps'\]"):
        w.add_episode(obs, act)
    assert open_dataset(tmp_path).num_episodes == 1


def test_reopen_removes_uncommitted_files_of_a_crashed_commit(tmp_path: Path) -> None:
    """A process killed mid-commit leaves the next episode's data/video files (or temp
    files) behind without its metadata row: readers ignore them, the next writer removes
    them and writes the episode again at that place."""
    episodes = write(tmp_path, [3, 4])
    orphan_data = tmp_path / "data/chunk-000/file-002.parquet"
    orphan_video = tmp_path / "videos/observation.images.rgb/chunk-000/file-002.mp4"
    shutil.copy(tmp_path / "data/chunk-000/file-001.parquet", orphan_data)
    shutil.copy(tmp_path / "videos/observation.images.rgb/chunk-000/file-001.mp4", orphan_video)
    (tmp_path / "meta/info.json.tmp").write_text("{half")
    info = json.loads((tmp_path / INFO).read_text())
    info["total_episodes"] = 1  # died between the metadata commit and info.json
    (tmp_path / INFO).write_text(json.dumps(info))
    assert open_dataset(tmp_path).num_episodes == 2  # the episodes metadata is the truth
    w = DatasetWriter(tmp_path)
    assert not orphan_data.exists() and not orphan_video.exists()
    assert not (tmp_path / "meta/info.json.tmp").exists()
    assert json.loads((tmp_path / INFO).read_text())["total_episodes"] == 2  # repaired
    obs, act = make_episode(np.random.default_rng(5), 5)
    assert w.add_episode(obs, act) == 2
    src = open_dataset(tmp_path)
    assert src.episode_lengths.tolist() == [3, 4, 5]
    assert np.array_equal(src.read(1)["action"], episodes[1][1]) and np.array_equal(src.read(2)["action"], act)


def test_files_past_a_chunk_go_to_the_next_chunk() -> None:
    from embodied.data.format import chunk_indices

    assert chunk_indices(CHUNKS_SIZE - 1) == {"chunk_index": 0, "file_index": CHUNKS_SIZE - 1}
    assert chunk_indices(CHUNKS_SIZE) == {"chunk_index": 1, "file_index": 0}


# ----------------------------------------------------------------------------- corrupt files
@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write(tmp_path, [4, 3])
    return tmp_path


def test_corrupt_data_file_named(dataset: Path) -> None:
    bad = dataset / "data/chunk-000/file-001.parquet"
    bad.write_bytes(b"PAR1 garbage, not parquet")
    src = open_dataset(dataset)
    src.read(0)  # other episodes still read
    with pytest.raises(DatasetError, match=r"file-001\.parquet: not a readable parquet file"):
        src.read(1)


def test_truncated_data_file_named(dataset: Path) -> None:
    path = dataset / "data/chunk-000/file-001.parquet"
    pq.write_table(pq.read_table(path).slice(0, 2), path)  # 2 of its 3 rows
    with pytest.raises(DatasetError, match=r"file-001\.parquet: holds rows 4\.\.5, episode 1 needs 4\.\.6"):
        open_dataset(dataset).read(1)


def test_truncated_video_named(dataset: Path) -> None:
    path = dataset / "videos/observation.images.rgb/chunk-000/file-000.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DatasetError, match=r"file-000\.mp4: (cannot decode video|video holds no frame)"):
        open_dataset(dataset).read(0)


def test_missing_files_and_bad_metadata_named(dataset: Path) -> None:
    (dataset / "videos/observation.images.rgb/chunk-000/file-001.mp4").unlink()
    with pytest.raises(DatasetError, match=r"file-001\.mp4: missing \(episode 1's observation.images.rgb video\)"):
        open_dataset(dataset)
    info = json.loads((dataset / INFO).read_text())
    (dataset / INFO).write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match=r"info\.json: codebase_version 'v2\.1' is not supported"):
        open_dataset(dataset)
    (dataset / INFO).write_text("{not json")
    with pytest.raises(DatasetError, match=r"info\.json: not valid JSON"):
        open_dataset(dataset)
    with pytest.raises(DatasetError, match="no such dataset"):
        open_dataset(dataset / "nope")


def test_corrupt_tasks_and_episode_metadata_named(dataset: Path) -> None:
    tasks = dataset / "meta/tasks.parquet"
    saved = tasks.read_bytes()
    tasks.write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"tasks\.parquet: not a readable parquet file"):
        open_dataset(dataset)
    tasks.write_bytes(saved)
    meta = dataset / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(meta)
    pq.write_table(table.drop_columns(["dataset_to_index"]), meta)
    with pytest.raises(DatasetError, match=r"meta/episodes: episode rows lack 'dataset_to_index'"):
        open_dataset(dataset)


# ----------------------------------------------------------------------------- LIBERO HDF5
def test_libero_hdf5_through_the_dataset_api(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "pick_up_the_ketchup_demo.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "pick up the ketchup"})
        for i, t in enumerate([4, 6]):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=np.full((t, 7), i / 10, dtype=np.float64))
            g.create_dataset("dones", data=(np.arange(t) == t - 1).astype(np.uint8))
            g.create_dataset("rewards", data=(np.arange(t) == t - 1).astype(np.float64))
            obs = g.create_group("obs")
            img = np.zeros((t, 8, 8, 3), dtype=np.uint8)
            img[:, 0, 0] = np.arange(t)[:, None]  # as stored: upside down
            obs.create_dataset("agentview_rgb", data=img)
            obs.create_dataset("eye_in_hand_rgb", data=img)
            obs.create_dataset("ee_pos", data=np.tile(np.arange(t)[:, None], (1, 3)).astype(np.float64))
            obs.create_dataset("ee_ori", data=np.zeros((t, 3)))
            obs.create_dataset("gripper_states", data=np.ones((t, 2)))
    src = open_dataset(path)
    assert src.num_episodes == 2 and src.episode_lengths.tolist() == [4, 6] and src.tasks == ["pick up the ketchup"]
    assert set(src.observation_space.spaces) == {"agentview_rgb", "wrist_rgb", "state", "instruction"}
    ep = src.read(1, frames=np.array([5, 0, 3]))
    assert ep["obs"]["agentview_rgb"][:, -1, -1, 0].tolist() == [5, 0, 3]  # upright, and in the asked order
    assert ep["obs"]["state"][:, 0].tolist() == [5, 0, 3] and ep["obs"]["state"].shape == (3, 8)
    assert np.allclose(ep["action"], 0.1) and ep["terminated"].tolist() == [True, False, False]
    assert ep["obs"]["instruction"].tolist() == ["pick up the ketchup"] * 3
    assert np.allclose(src.stats["action"]["mean"], (4 * 0 + 6 * 0.1) / 10)
    (tmp_path / "broken.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match=r"broken\.hdf5: not a readable HDF5 file"):
        open_dataset(tmp_path)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    write(tmp_path, [2])
    first = DatasetWriter(tmp_path)
    with pytest.raises(DatasetError, match=r"writer\.lock: another writer .* has this dataset open"):
        DatasetWriter(tmp_path)
    first.close()
    with pytest.raises(DatasetError, match="this writer is closed"):
        first.add_episode(*make_episode(np.random.default_rng(0), 2))
    with DatasetWriter(tmp_path) as second:
        assert second.add_episode(*make_episode(np.random.default_rng(0), 2)) == 1
    assert open_dataset(tmp_path).num_episodes == 2
