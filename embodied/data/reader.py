"""One read API over every dataset kind: `open_dataset(path)` returns an `EpisodeSource`.

    src = open_dataset("outputs/collect/pointnav")          # ours, LeRobot's, or LIBERO HDF5
    src.observation_space, src.action_space, src.tasks, src.fps, src.episode_lengths, src.stats
    ep = src.read(0)                                        # every frame of episode 0, decoded
    ep["obs"]["rgb"], ep["action"], ep["reward"], ep["terminated"], ep["timestep"]
    part = src.read(0, frames=np.arange(5, 12))             # only those frames

Observation keys are the environment's own (`rgb`, `depth`, `gps`, `instruction`, ...). A
dataset written by LeRobot has no env: its keys are its feature names without the
`observation.images.` / `observation.` prefix (`observation.images.image` -> `image`), its
task string is `instruction`, and `rename={"observation.images.image": "agentview_rgb"}`
picks other names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from gymnasium import spaces

from embodied.data import arrow
from embodied.data import format as F
from embodied.data.libero_hdf5 import LiberoHDF5Source
from embodied.data.source import EpisodeSource
from embodied.data.video import decode
from embodied.data.vlnce import VLNCESource


def open_dataset(path: str | Path, rename: Mapping[str, str] | None = None) -> EpisodeSource:
    """A LeRobotDataset v3.0 directory (written by embodied or by LeRobot), LIBERO / robomimic
    HDF5 demonstrations (one `.hdf5` file or a directory of them), or a VLN-CE split
    (`{split}.json.gz` beside its `{split}_gt.json.gz`: actions and positions, no images)."""
    path = Path(path)
    if (path / F.INFO).exists():
        return LeRobotSource(path, rename=rename)
    if path.is_file() and path.name.endswith(".json.gz"):
        return VLNCESource(path)
    if path.suffix in (".hdf5", ".h5") or (path.is_dir() and any(path.glob("*.hdf5"))):
        return LiberoHDF5Source(path)
    if not path.exists():
        raise F.DatasetError(f"{path}: no such dataset")
    raise F.DatasetError(f"{path}: not a dataset (no {F.INFO}, no .hdf5 files)")


def load_episode_rows(root: Path, with_stats: bool = True) -> list[dict[str, Any]]:
    """Every row of meta/episodes/*/*.parquet, in episode order, checked for gaps."""
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    rows: list[dict[str, Any]] = []
    for p in files:
        table = arrow.read_table(p)
        if not with_stats:
            table = table.select([c for c in table.column_names if not c.startswith("stats/")])
        rows += table.to_pylist()
    for i, row in enumerate(rows):
        for key in ("episode_index", "length", "dataset_from_index", "dataset_to_index"):
            if key not in row:
                raise F.DatasetError(f"{root / 'meta/episodes'}: episode rows lack {key!r}")
        if row["episode_index"] != i:
            raise F.DatasetError(f"{root / 'meta/episodes'}: episode_index {row['episode_index']} at position {i} "
                                 "(episodes must be numbered 0..N-1 in file order)")
        if row["dataset_to_index"] - row["dataset_from_index"] != row["length"]:
            raise F.DatasetError(f"{root / 'meta/episodes'}: episode {i}: length {row['length']} does not match "
                                 f"its frame range [{row['dataset_from_index']}, {row['dataset_to_index']})")
    return rows


class LeRobotSource(EpisodeSource):
    """A LeRobotDataset v3.0 directory."""

    # Parquet tables kept per process, by size: windows re-read the files of the episodes they
    # touch, and a file is re-parsed on every miss (a few ms). The newest table always stays.
    cache_bytes = 256 * 2**20
    # Decoded video frames kept per process, whole episodes at a time: random windows hit the same
    # episodes again and again, and decoding (seek + decode + YUV->RGB) is most of a window's cost.
    # 0 turns it off (each read then decodes only the frames it asks for).
    video_cache_bytes = 512 * 2**20

    def __init__(self, root: str | Path, rename: Mapping[str, str] | None = None) -> None:
        self.path = Path(root)
        self.info = F.read_json(self.path / F.INFO)
        version = self.info.get("codebase_version")
        if version != F.CODEBASE_VERSION:
            raise F.DatasetError(f"{self.path / F.INFO}: codebase_version {version!r} is not supported "
                                 f"(this reader reads {F.CODEBASE_VERSION!r}; convert older datasets with LeRobot)")
        for key in ("fps", "features", "data_path"):
            if key not in self.info:
                raise F.DatasetError(f"{self.path / F.INFO}: missing {key!r}")
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.tasks = arrow.read_tasks(self.path / F.TASKS)
        self.rows = load_episode_rows(self.path, with_stats=False)
        self.episode_lengths = np.array([r["length"] for r in self.rows], dtype=np.int64)
        self._check_files()
        meta_path = self.path / F.EMBODIED
        if meta_path.exists():
            meta = F.read_json(meta_path)
            try:
                self.env = meta.get("env")
                self.keymap: dict[str, str] = dict(meta["observation_keys"])
                self.observation_space = F.space_from_json(meta["observation_space"])
                self.action_space = F.space_from_json(meta["action_space"])
            except (KeyError, TypeError, ValueError) as e:
                raise F.DatasetError(f"{meta_path}: malformed ({type(e).__name__}: {e})") from e
            self.keymap.pop(F.EXPERT_ACTION, None)
            self.observation_space = spaces.Dict({k: s for k, s in self.observation_space.spaces.items()
                                                  if k != F.EXPERT_ACTION})
        else:
            self.keymap = self._foreign_keymap(rename or {})
            self.observation_space = self._foreign_space()
            self.action_space = self._foreign_action_space()
        self.has_expert_action = F.EXPERT_ACTION in self.features
        self.stats = self._stats()
        self._tables: OrderedDict[Path, pa.Table] = OrderedDict()
        self._videos: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ metadata
    def _check_files(self) -> None:
        for row in self.rows:
            p = self.path / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                          file_index=row["data/file_index"])
            if not p.exists():
                raise F.DatasetError(f"{p}: missing (episode {row['episode_index']} is stored there)")
            for key in self._video_keys():
                v = self._video_path(row, key)
                if not v.exists():
                    raise F.DatasetError(f"{v}: missing (episode {row['episode_index']}'s {key} video)")

    def _video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    def _video_path(self, row: Mapping[str, Any], key: str) -> Path:
        return self.path / self.info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                          file_index=row[f"videos/{key}/file_index"])

    def _foreign_keymap(self, rename: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for fkey in self.features:
            if fkey in F.FRAME_FEATURES or fkey in ("action", F.EXPERT_ACTION):
                continue
            if fkey in rename:
                out[rename[fkey]] = fkey
            elif fkey.startswith(F.IMAGE_PREFIX):
                out[fkey[len(F.IMAGE_PREFIX):]] = fkey
            elif fkey.startswith(F.OBS_PREFIX):
                out[fkey[len(F.OBS_PREFIX):]] = fkey
        out[rename.get("task", F.INSTRUCTION)] = "task"
        unknown = sorted(set(rename) - set(self.features) - {"task"})
        if unknown:
            raise F.DatasetError(f"rename: {unknown} are not features of {self.path} "
                                 f"(features: {sorted(self.features)})")
        return out

    def _foreign_space(self) -> spaces.Dict:
        out: dict[str, spaces.Space] = {}
        for name, fkey in self.keymap.items():
            if fkey == "task":
                chars = "".join(sorted(set("".join(self.tasks)))) or " "
                out[name] = spaces.Text(max(1024, *(len(t) for t in self.tasks)) if self.tasks else 1024,
                                        min_length=0, charset=chars)
            else:
                out[name] = _box(self.features[fkey])
        return spaces.Dict(out)

    def _foreign_action_space(self) -> spaces.Space:
        if "action" not in self.features:
            raise F.DatasetError(f"{self.path / F.INFO}: no 'action' feature")
        return _box(self.features["action"])

    def _stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.path / F.STATS
        if not path.exists():
            return {}
        raw = F.read_json(path)
        names = {fkey: name for name, fkey in self.keymap.items()}
        names.update(action="action", expert_action=F.EXPERT_ACTION)
        return {names.get(fkey, fkey): {k: np.asarray(v) for k, v in st.items()} for fkey, st in raw.items()}

    def episode_info(self, episode: int) -> dict[str, Any]:
        row = self.rows[episode]
        out = {"episode_index": episode, "length": row["length"], "tasks": row.get("tasks", [])}
        for key, value in row.items():
            if key.startswith("embodied/"):
                out[key[len("embodied/"):]] = value
        if "metrics" in out and isinstance(out["metrics"], str):
            import json

            out["metrics"] = json.loads(out["metrics"])
        return out

    # ------------------------------------------------------------------ frames
    def _table(self, path: Path) -> pa.Table:
        table = self._tables.get(path)
        if table is None:
            table = arrow.read_table(path)
            self._tables[path] = table
            while len(self._tables) > 1 and sum(t.nbytes for t in self._tables.values()) > self.cache_bytes:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(path)
        return table

    def read(self, episode: int, frames: np.ndarray | None = None, keys: Sequence[str] | None = None
             ) -> dict[str, Any]:
        frames = self._frames(episode, frames)
        wanted = self._keys(keys)
        row = self.rows[episode]
        path = self.path / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                         file_index=row["data/file_index"])
        table = self._table(path)
        if "index" not in table.column_names or "episode_index" not in table.column_names:
            raise F.DatasetError(f"{path}: missing the 'index'/'episode_index' columns")
        first = table.column("index")[0].as_py() if len(table) else 0
        lo = row["dataset_from_index"] - first
        if lo < 0 or lo + row["length"] > len(table):
            raise F.DatasetError(f"{path}: holds rows {first}..{first + len(table) - 1}, episode {episode} needs "
                                 f"{row['dataset_from_index']}..{row['dataset_to_index'] - 1} (truncated?)")
        contiguous = len(frames) > 0 and np.array_equal(frames, np.arange(frames[0], frames[0] + len(frames)))
        rows = table.slice(lo + int(frames[0]), len(frames)) if contiguous else table.take(pa.array(lo + frames))
        got = rows.column("episode_index").to_numpy()
        if got.size and np.any(got != episode):
            raise F.DatasetError(f"{path}: rows for episode {episode} hold episode_index {sorted(set(got))}")
        out: dict[str, Any] = {"obs": {}}
        for name in wanted:
            fkey = self.keymap[name]
            if fkey == "task":
                idx = self._col(rows, "task_index", path)
                out["obs"][name] = np.array([self.tasks[i] for i in idx], dtype=object)
            elif self.features[fkey]["dtype"] == "image":  # PNG/JPEG bytes in parquet (e.g. HuggingFaceVLA/libero)
                out["obs"][name] = _decode_images(rows, fkey, path)
            elif self.features[fkey]["dtype"] == "video":
                out["obs"][name] = self._video_frames(episode, fkey, frames)
            else:
                out["obs"][name] = self._obs_value(self._col(rows, fkey, path), name)
        out["action"] = self._col(rows, "action", path)
        if isinstance(self.action_space, spaces.Discrete):
            out["action"] = out["action"].reshape(len(frames))
        if self.has_expert_action:
            out[F.EXPERT_ACTION] = self._col(rows, F.EXPERT_ACTION, path)
            if out[F.EXPERT_ACTION].ndim == 2 and out[F.EXPERT_ACTION].shape[1] == 1 and \
                    self.features[F.EXPERT_ACTION]["dtype"] == "int64":
                out[F.EXPERT_ACTION] = out[F.EXPERT_ACTION].reshape(len(frames))
        n = len(frames)
        out["reward"] = self._col(rows, "next.reward", path, np.zeros(n, np.float32)).astype(np.float32)
        done = self._col(rows, "next.done", path, np.zeros(n, bool))
        out["terminated"] = self._col(rows, "next.terminated", path, done).astype(bool)
        out["truncated"] = self._col(rows, "next.truncated", path, np.zeros(n, bool)).astype(bool)
        out["timestep"] = self._col(rows, "frame_index", path).astype(np.int64)
        return out

    def _video_frames(self, episode: int, fkey: str, frames: np.ndarray) -> np.ndarray:
        row = self.rows[episode]
        path, start = self._video_path(row, fkey), float(row[f"videos/{fkey}/from_timestamp"])
        shape = self.features[fkey].get("shape") or [0]
        episode_bytes = int(np.prod(shape)) * int(row["length"])
        if episode_bytes == 0 or episode_bytes > self.video_cache_bytes:
            return decode(path, self.fps, frames, start)
        key = (episode, fkey)
        video = self._videos.get(key)
        if video is None:
            video = decode(path, self.fps, np.arange(int(row["length"])), start)
            self._videos[key] = video
            while len(self._videos) > 1 and sum(v.nbytes for v in self._videos.values()) > self.video_cache_bytes:
                self._videos.popitem(last=False)
        else:
            self._videos.move_to_end(key)
        return video[frames]

    def _col(self, rows: pa.Table, fkey: str, path: Path, default: np.ndarray | None = None) -> np.ndarray:
        if fkey not in rows.column_names:
            if default is not None or fkey not in self.features:
                if default is None:
                    raise F.DatasetError(f"{path}: no column {fkey!r}")
                return default
            raise F.DatasetError(f"{path}: no column {fkey!r} (info.json lists it as a feature)")
        ft = self.features.get(fkey, F.FRAME_FEATURES.get(fkey))
        return arrow.from_column(rows.column(fkey), ft, fkey, path)

    def _obs_value(self, values: np.ndarray, name: str) -> np.ndarray:
        """Back to the space's own shape and dtype (Discrete: scalars; Box: as declared)."""
        space = self.observation_space.spaces.get(name)
        if isinstance(space, spaces.Discrete):
            return values.reshape(len(values)).astype(np.int64)
        if isinstance(space, spaces.Box):
            return values.reshape((len(values), *space.shape)).astype(space.dtype, copy=False)
        return values


def _decode_images(rows: pa.Table, fkey: str, path: Path) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    if fkey not in rows.column_names:
        raise F.DatasetError(f"{path}: no column {fkey!r} (info.json lists it as a feature)")
    out = []
    for value in rows.column(fkey).to_pylist():
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise F.DatasetError(f"{path}: column {fkey!r} holds no image bytes (images stored as paths are not "
                                 "supported)")
        try:
            out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        except (UnidentifiedImageError, OSError) as e:
            raise F.DatasetError(f"{path}: column {fkey!r}: not a decodable image ({e})") from e
    return np.stack(out)


def _box(ft: Mapping[str, Any]) -> spaces.Box:
    shape = tuple(ft["shape"])
    if ft["dtype"] in ("video", "image"):
        return spaces.Box(0, 255, shape, np.uint8)
    dtype = np.dtype(ft["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return spaces.Box(info.min, info.max, shape, dtype)
    if dtype == np.bool_:
        return spaces.Box(0, 1, shape, np.int8)
    return spaces.Box(-np.inf, np.inf, shape, dtype)
