"""`DatasetWriter`: appends whole episodes to a LeRobotDataset v3.0 directory, one commit each.

Each episode gets its own data file and video files (chunk = file number // 1000). A commit
writes them (temp file, then rename), then replaces the episodes-metadata file that lists
the episode: that replacement is the commit point. `meta/stats.json` and `meta/info.json`
follow; both are derived from the episodes metadata and repaired on the next open if a
process died in between. Files of an episode that never reached its commit point are
removed on the next open. So an interrupted writer keeps every committed episode and never
exposes a half one, and reopening the same directory appends after the last commit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from gymnasium import spaces

from embodied.data import arrow
from embodied.data import format as F
from embodied.data.video import VideoSettings, encode

FORMAT_VERSION = 1
STAT_NAMES = ("min", "max", "mean", "std", "count")


class DatasetWriter:
    """Create a dataset at `root`, or reopen one written by `embodied` to append to it.

    On reopen the spaces, fps and env given (when given) must match the stored ones: an
    error names meta/embodied.json and the key that differs.

        writer = DatasetWriter(root, observation_space=env.observation_space,
                               action_space=env.action_space, fps=10, env={"name": "pointnav", "options": {}})
        writer.add_episode(obs, action, reward, terminated, truncated, seed=0, scene="procedural:3")
    """

    def __init__(
        self,
        root: str | Path,
        observation_space: spaces.Dict | None = None,
        action_space: spaces.Space | None = None,
        fps: int | None = None,
        env: Mapping[str, Any] | None = None,
        video: VideoSettings | None = None,
        collection: Mapping[str, Any] | None = None,
        robot_type: str | None = None,
    ) -> None:
        self.root = Path(root)
        self._lock = _lock(self.root)
        try:
            if (self.root / F.INFO).exists():
                self._open(observation_space, action_space, fps, env)
            else:
                if observation_space is None or action_space is None or fps is None:
                    raise F.DatasetError(f"{self.root}: no dataset there; creating one needs observation_space, "
                                         "action_space and fps")
                self._create(observation_space, action_space, int(fps), env, video or VideoSettings(), collection,
                             robot_type)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the directory for other writers (also done when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ create / open
    def _create(self, obs_space: spaces.Dict, act_space: spaces.Space, fps: int, env: Mapping[str, Any] | None,
                video: VideoSettings, collection: Mapping[str, Any] | None, robot_type: str | None) -> None:
        if fps < 1:
            raise F.DatasetError(f"fps must be >= 1, got {fps}")
        self.fps, self.video = fps, video
        self.features, self.keymap = F.build_features(obs_space, act_space, fps, video)
        self.observation_space, self.action_space = obs_space, act_space
        self.meta = {"format_version": FORMAT_VERSION, "env": dict(env) if env else None,
                     "observation_space": F.space_to_json(obs_space), "action_space": F.space_to_json(act_space),
                     "observation_keys": self.keymap,
                     "video": {"codec": video.codec, "crf": video.crf, "gop": video.gop, "pix_fmt": video.pix_fmt},
                     "collection": dict(collection) if collection else None}
        self.info = {"codebase_version": F.CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": 0,
                     "total_frames": 0, "total_tasks": 0, "chunks_size": F.CHUNKS_SIZE,
                     "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps, "splits": {},
                     "data_path": F.DATA_PATH, "video_path": F.VIDEO_PATH if self._video_keys() else None,
                     "features": self.features}
        self.tasks: list[str] = []
        self.rows: list[dict[str, Any]] = []  # episodes metadata of earlier files (read-only)
        self.session_rows: list[dict[str, Any]] = []
        self.meta_file = 0
        self.next_file = 0
        self.num_frames = 0
        self._acc: dict[str, dict[str, np.ndarray]] = {}
        F.write_json(self.root / F.EMBODIED, self.meta)
        self._write_info()

    def _open(self, obs_space: spaces.Dict | None, act_space: spaces.Space | None, fps: int | None,
              env: Mapping[str, Any] | None) -> None:
        from embodied.data.reader import load_episode_rows

        self.info = F.read_json(self.root / F.INFO)
        if self.info.get("codebase_version") != F.CODEBASE_VERSION:
            raise F.DatasetError(f"{self.root / F.INFO}: codebase_version {self.info.get('codebase_version')!r}, "
                                 f"this writer appends to {F.CODEBASE_VERSION!r} only")
        path = self.root / F.EMBODIED
        if not path.exists():
            raise F.DatasetError(f"{path}: missing; only datasets written by embodied can be appended to")
        self.meta = F.read_json(path)
        self.features, self.fps = self.info["features"], int(self.info["fps"])
        self.keymap = self.meta["observation_keys"]
        self.observation_space = F.space_from_json(self.meta["observation_space"])
        self.action_space = F.space_from_json(self.meta["action_space"])
        v = self.meta["video"]
        self.video = VideoSettings(v["codec"], v["crf"], v["gop"], v["pix_fmt"])
        self._check_same(path, "observation_space", obs_space, self.observation_space)
        self._check_same(path, "action_space", act_space, self.action_space)
        if fps is not None and int(fps) != self.fps:
            raise F.DatasetError(f"{self.root / F.INFO}: fps is {self.fps}, the writer was given {fps}")
        if env is not None and self.meta.get("env") is not None and dict(env) != self.meta["env"]:
            raise F.DatasetError(f"{path}: env {self.meta['env']} differs from {dict(env)}")
        self.tasks = arrow.read_tasks(self.root / F.TASKS) if (self.root / F.TASKS).exists() else []
        self.rows = load_episode_rows(self.root)
        self.session_rows = []
        last = self.rows[-1] if self.rows else None
        self.meta_file = (_linear(last, "meta/episodes") + 1) if last else 0
        self.next_file = (_linear(last, "data") + 1) if last else 0
        self.num_frames = int(last["dataset_to_index"]) if last else 0
        self._acc = {}
        for row in self.rows:
            self._accumulate(_row_stats(row, self.features))
        self._remove_uncommitted()
        self._write_stats()
        self._write_info()

    @staticmethod
    def _check_same(path: Path, what: str, given: spaces.Space | None, stored: spaces.Space) -> None:
        if given is None:
            return
        a, b = F.space_to_json(given), F.space_to_json(stored)
        if a != b:
            if a.get("type") == b.get("type") == "Dict":
                diff = sorted(k for k in set(a["spaces"]) | set(b["spaces"])
                              if a["spaces"].get(k) != b["spaces"].get(k))
                raise F.DatasetError(f"{path}: {what} differs from the stored one in keys {diff}")
            raise F.DatasetError(f"{path}: {what} {given} differs from the stored {stored}")

    def _remove_uncommitted(self) -> None:
        """Temp files, and data/video files past the last committed one (a run died mid-commit)."""
        for sub in ("meta", "data", "videos"):
            for p in (self.root / sub).rglob("*.tmp"):
                p.unlink()
        for p in list((self.root / "data").glob("chunk-*/file-*.parquet")) + \
                list((self.root / "videos").glob("*/chunk-*/file-*.mp4")) + \
                list((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            top = self.meta_file if p.is_relative_to(self.root / "meta") else self.next_file
            if _linear_from_path(p) >= top:
                p.unlink()

    # ------------------------------------------------------------------ state
    @property
    def num_episodes(self) -> int:
        return len(self.rows) + len(self.session_rows)

    def episode_rows(self) -> list[dict[str, Any]]:
        return self.rows + self.session_rows

    def seeds(self) -> list[int | None]:
        """The reset seed of every committed episode, in commit order."""
        return [r.get("embodied/seed") for r in self.episode_rows()]

    def _video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    # ------------------------------------------------------------------ adding an episode
    def add_episode(
        self,
        obs: Mapping[str, Any],
        action: Any,
        reward: Sequence[float] | np.ndarray | None = None,
        terminated: Sequence[bool] | np.ndarray | None = None,
        truncated: Sequence[bool] | np.ndarray | None = None,
        *,
        seed: int | None = None,
        scene: str = "",
        init_state: int = -1,
        episode_id: str = "",
        metrics: Mapping[str, float] | None = None,
        task: str = "",
    ) -> int:
        """Commit one episode and return its index. `obs` maps each observation key to its T
        per-step values (the instruction as T strings); step t is (obs_t, action_t, reward_t,
        terminated_t, truncated_t), the reward and flags being what env.step(action_t) returned.
        `task` names the episode's task when the observations carry no instruction."""
        if self._lock is None:
            raise F.DatasetError(f"{self.root}: this writer is closed")
        action = np.asarray(action)
        t = len(action)
        if t == 0:
            raise F.DatasetError("an episode needs at least one step")
        columns = self._frame_columns(obs, action, t, reward, terminated, truncated, scene, init_state, task)
        e = self.num_episodes
        file_loc = F.chunk_indices(self.next_file)
        for key in self._video_keys():
            name = next(k for k, v in self.keymap.items() if v == key)
            encode(self.root / F.VIDEO_PATH.format(video_key=key, **file_loc), np.asarray(obs[name]), self.fps,
                   self.video)
        table = pa.table({k: arrow.to_column(v, self.features[k], k) for k, v in columns.items()})
        arrow.write_table(self.root / F.DATA_PATH.format(**file_loc), table)
        task_names = list(dict.fromkeys(self.tasks[i] for i in columns["task_index"]))
        stats = episode_stats(columns, obs, self.keymap, self.features)
        row = self._episode_row(e, t, task_names, file_loc, stats, seed, scene, init_state, episode_id, metrics)
        self.session_rows.append(row)
        arrow.write_table(self.root / F.EPISODES_PATH.format(**F.chunk_indices(self.meta_file)),
                          pa.Table.from_pylist(self.session_rows))  # the commit point
        self.next_file += 1
        self.num_frames += t
        if len(self.session_rows) >= F.CHUNKS_SIZE:  # start a new metadata file
            self.rows += self.session_rows
            self.session_rows = []
            self.meta_file += 1
        self._accumulate(stats)
        self._write_stats()
        self._write_info()
        return e

    def _frame_columns(self, obs: Mapping[str, Any], action: np.ndarray, t: int, reward: Any, terminated: Any,
                       truncated: Any, scene: str, init_state: int, task: str) -> dict[str, Any]:
        missing = sorted(set(self.keymap) - set(obs))
        extra = sorted(set(obs) - set(self.keymap))
        if missing or extra:
            raise F.DatasetError(f"episode observations: missing keys {missing}, unknown keys {extra} "
                                 f"(the dataset stores {sorted(self.keymap)})")
        for key, values in obs.items():
            if len(values) != t:
                raise F.DatasetError(f"observation {key!r} has {len(values)} steps, action has {t}")
        texts = obs.get(F.INSTRUCTION) if self.keymap.get(F.INSTRUCTION) == "task" else None
        task_index = [self._task_index(str(s)) for s in texts] if texts is not None else [self._task_index(task)] * t
        start = self.num_frames
        cols: dict[str, Any] = {}
        for key, fkey in self.keymap.items():
            if fkey not in ("task",) and not fkey.startswith(F.IMAGE_PREFIX):
                cols[fkey] = obs[key]
        cols["action"] = action
        cols["timestamp"] = np.arange(t, dtype=np.float64) / self.fps
        cols["frame_index"] = np.arange(t)
        cols["episode_index"] = np.full(t, self.num_episodes)
        cols["index"] = np.arange(start, start + t)
        cols["task_index"] = np.asarray(task_index)
        cols["next.reward"] = np.zeros(t) if reward is None else _steps(reward, t, "reward")
        cols["next.terminated"] = np.zeros(t, bool) if terminated is None else _steps(terminated, t, "terminated")
        cols["next.truncated"] = np.zeros(t, bool) if truncated is None else _steps(truncated, t, "truncated")
        cols["scene"] = [scene] * t
        cols["init_state"] = np.full(t, init_state)
        return cols

    def _task_index(self, task: str) -> int:
        if task not in self.tasks:
            self.tasks.append(task)
            arrow.write_table(self.root / F.TASKS, arrow.tasks_table(self.tasks))
        return self.tasks.index(task)

    def _episode_row(self, e: int, t: int, task_names: list[str], file_loc: dict[str, int], stats: dict,
                     seed: int | None, scene: str, init_state: int, episode_id: str,
                     metrics: Mapping[str, float] | None) -> dict[str, Any]:
        row: dict[str, Any] = {"episode_index": e, "tasks": task_names, "length": t,
                               "data/chunk_index": file_loc["chunk_index"], "data/file_index": file_loc["file_index"],
                               "dataset_from_index": self.num_frames, "dataset_to_index": self.num_frames + t}
        for key in self._video_keys():
            row.update({f"videos/{key}/chunk_index": file_loc["chunk_index"],
                        f"videos/{key}/file_index": file_loc["file_index"],
                        f"videos/{key}/from_timestamp": 0.0, f"videos/{key}/to_timestamp": t / self.fps})
        for fkey, st in stats.items():
            for name in STAT_NAMES:
                row[f"stats/{fkey}/{name}"] = st[name].tolist()
        meta_loc = F.chunk_indices(self.meta_file)
        row["meta/episodes/chunk_index"] = meta_loc["chunk_index"]
        row["meta/episodes/file_index"] = meta_loc["file_index"]
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        row.update({"embodied/seed": seed, "embodied/scene": scene, "embodied/init_state": int(init_state),
                    "embodied/episode_id": episode_id, "embodied/success": float(metrics.get("success", np.nan)),
                    "embodied/metrics": json.dumps(metrics)})
        return row

    # ------------------------------------------------------------------ stats and info
    def _accumulate(self, stats: dict[str, dict[str, np.ndarray]]) -> None:
        for key, st in stats.items():
            n = float(st["count"][0])
            s, ss = st["mean"] * n, (st["std"] ** 2 + st["mean"] ** 2) * n
            acc = self._acc.get(key)
            if acc is None:
                self._acc[key] = {"count": n, "sum": s, "sumsq": ss, "min": st["min"], "max": st["max"]}
            else:
                acc["count"] += n
                acc["sum"] = acc["sum"] + s
                acc["sumsq"] = acc["sumsq"] + ss
                acc["min"] = np.minimum(acc["min"], st["min"])
                acc["max"] = np.maximum(acc["max"], st["max"])

    def stats(self) -> dict[str, dict[str, list]]:
        out = {}
        for key, acc in self._acc.items():
            n = acc["count"]
            mean = acc["sum"] / n
            std = np.sqrt(np.maximum(acc["sumsq"] / n - mean**2, 0.0))
            out[key] = {"min": acc["min"].tolist(), "max": acc["max"].tolist(), "mean": mean.tolist(),
                        "std": std.tolist(), "count": [int(n)]}
        return out

    def _write_stats(self) -> None:
        F.write_json(self.root / F.STATS, self.stats())

    def _write_info(self) -> None:
        n = self.num_episodes
        self.info.update(total_episodes=n, total_frames=self.num_frames, total_tasks=len(self.tasks),
                         splits={"train": f"0:{n}"} if n else {})
        F.write_json(self.root / F.INFO, self.info)


@dataclass
class EpisodeBuffer:
    """A running episode, step by step: (obs_t, action_t, reward_t, terminated_t, truncated_t), for
    `DatasetWriter.add_episode` (what `embodied-collect` and the viewer's recorder buffer). Each
    observation is copied as it is added: vector envs and sessions reuse their arrays."""

    seed: int | None
    identity: dict[str, Any]  # scene, init_state, episode_id (the reset info's "identity")
    obs: dict[str, list] = field(default_factory=dict)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    terminated: list = field(default_factory=list)
    truncated: list = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # the episode's final metrics

    def add(self, obs: Mapping[str, Any], action: Any, reward: float, term: bool, trunc: bool) -> None:
        for key, value in obs.items():
            self.obs.setdefault(key, []).append(value if isinstance(value, str) else np.array(value))
        self.actions.append(np.asarray(action))
        self.rewards.append(float(reward))
        self.terminated.append(bool(term))
        self.truncated.append(bool(trunc))

    def __len__(self) -> int:
        return len(self.actions)

    def write(self, writer: DatasetWriter, task: str = "", cut_short: bool = False) -> int:
        """Commit the episode through `writer`; returns its index. `cut_short`: the episode was ended
        from outside (not by the env), so its last step is marked truncated."""
        truncated = list(self.truncated)
        if cut_short and truncated and not (self.terminated[-1] or truncated[-1]):
            truncated[-1] = True
        obs = {k: (v if isinstance(v[0], str) else np.stack(v)) for k, v in self.obs.items()}
        ident = self.identity
        return writer.add_episode(obs, np.stack(self.actions), np.asarray(self.rewards), np.asarray(self.terminated),
                                  np.asarray(truncated), seed=self.seed, scene=str(ident.get("scene", "")),
                                  init_state=int(ident.get("init_state", -1)),
                                  episode_id=str(ident.get("episode_id", "")),
                                  metrics={k: float(v) for k, v in self.metrics.items()}, task=task)


def _lock(root: Path) -> Any:
    """An exclusive lock on the directory for this writer's lifetime: two writers appending
    at once would both claim the next episode number. The kernel drops it if the process dies."""
    import fcntl

    path = root / "meta" / "writer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")  # noqa: SIM115 (held open on purpose: the lock lives as long as the file)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise F.DatasetError(f"{path}: another writer (process or object) has this dataset open") from None
    return f


def _steps(values: Any, t: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (t,):
        raise F.DatasetError(f"{name} must have one value per step ({t}), got shape {arr.shape}")
    return arr


def _linear(row: Mapping[str, Any], prefix: str) -> int:
    return int(row[f"{prefix}/chunk_index"]) * F.CHUNKS_SIZE + int(row[f"{prefix}/file_index"])


def _linear_from_path(p: Path) -> int:
    chunk = int(p.parent.name.split("-")[1])
    return chunk * F.CHUNKS_SIZE + int(p.stem.split("-")[1])


def episode_stats(columns: Mapping[str, Any], obs: Mapping[str, Any], keymap: Mapping[str, str],
                  features: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """min/max/mean/std/count per numeric feature. Images: per channel in [0, 1] with shape
    (C, 1, 1), as LeRobot keeps them; depth and other 3-D arrays per channel, (C, 1, 1);
    vectors per element."""
    out = {}
    values: dict[str, np.ndarray] = {}
    for key, fkey in keymap.items():
        if fkey.startswith(F.IMAGE_PREFIX):
            values[fkey] = np.asarray(obs[key])
    for fkey, v in columns.items():
        if features[fkey]["dtype"] not in ("string", "bool"):
            values[fkey] = np.asarray(v)
    for fkey, v in values.items():
        scale = 255.0 if features[fkey]["dtype"] == "video" else 1.0
        if v.ndim == 4:  # [T, H, W, C] -> per channel
            channels, shape = [v[..., c].reshape(-1) for c in range(v.shape[-1])], (v.shape[-1], 1, 1)
        elif v.ndim == 3:  # [T, H, W]
            channels, shape = [v.reshape(-1)], (1,)
        else:
            flat = v.reshape(len(v), -1)
            channels, shape = [flat[:, j] for j in range(flat.shape[1])], (flat.shape[1],)
        per = np.array([_moments(c) for c in channels], dtype=np.float64)  # [C, 4]: min, max, mean, std
        out[fkey] = {"min": (per[:, 0] / scale).reshape(shape), "max": (per[:, 1] / scale).reshape(shape),
                     "mean": (per[:, 2] / scale).reshape(shape), "std": (per[:, 3] / scale).reshape(shape),
                     "count": np.array([len(v)])}
    return out


def _moments(x: np.ndarray) -> tuple[float, float, float, float]:
    """min, max, mean, std of a 1-D array, accumulated in float64 (uint8 through a histogram:
    exact and fast on images)."""
    if x.dtype == np.uint8:
        hist = np.bincount(x, minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        nz = np.flatnonzero(hist)
        n = hist.sum()
        mean = (hist @ values) / n
        var = (hist @ values**2) / n - mean**2
        return float(nz[0]), float(nz[-1]), float(mean), float(np.sqrt(max(var, 0.0)))
    x = np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    mean = float(x.sum(dtype=np.float64)) / len(x)
    centred = x.astype(np.float64) - mean if x.dtype.itemsize > 4 or len(x) < 4096 else \
        x.astype(np.float32) - np.float32(mean)
    var = float(np.square(centred).sum(dtype=np.float64)) / len(x)
    return float(x.min()), float(x.max()), mean, float(np.sqrt(var))


def _row_stats(row: Mapping[str, Any], features: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in features:
        if f"stats/{key}/mean" in row:
            out[key] = {name: np.asarray(row[f"stats/{key}/{name}"], dtype=np.float64) for name in STAT_NAMES}
    return out
