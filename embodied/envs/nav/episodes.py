"""Navigation episodes: the dataclass, goal view points, and VLN-CE-layout files.

Episode files follow the R2R-CE layout (`{split}.json.gz` with `episodes`, and
`{split}_gt.json.gz` mapping episode_id -> {locations, actions, forward_steps}). Our own
files store Z-up positions and say so in `"frame": "z_up"`; files without that key are
real R2R-CE / RxR-CE files in habitat's Y-up frame and are converted on load.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FRAME_KEY = "frame"


@dataclass
class NavEpisode:
    episode_id: str
    scene_id: str  # "procedural:<seed>" for generated houses, else a scene path
    start_position: list[float]
    start_yaw: float
    goals: list[list[float]]  # goal points; reaching any one counts
    success_distance: float
    geodesic_distance: float = float("nan")
    instruction: str = ""
    reference_path: list[list[float]] = field(default_factory=list)
    object_category: str = ""
    target_object_ids: list[int] = field(default_factory=list)
    tour_actions: list[int] = field(default_factory=list)  # ObjectRecall: scripted tour
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scene_seed(self) -> int:
        if not self.scene_id.startswith("procedural:"):
            raise ValueError(f"episode {self.episode_id} uses scene '{self.scene_id}', not a procedural house")
        return int(self.scene_id.split(":", 1)[1])


def yup_to_zup(p: list[float]) -> list[float]:
    x, y, z = p
    return [x, -z, y]


def quat_to_yaw_yup(q: list[float]) -> float:
    """Heading of a habitat agent rotation [x, y, z, w] (rotation about +Y, 0 = facing -Z)."""
    _, y, _, w = q
    habitat_yaw = 2.0 * np.arctan2(y, w)  # rotation about +Y; the agent faces -Z at 0
    # habitat -Z is our +Y, so facing -Z (habitat yaw 0) is our yaw pi/2
    return float(np.arctan2(np.sin(habitat_yaw + np.pi / 2), np.cos(habitat_yaw + np.pi / 2)))


def save_episodes(episodes: list[NavEpisode], directory: str | Path, split: str) -> Path:
    """Write `{split}.json.gz` and `{split}_gt.json.gz` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {FRAME_KEY: "z_up", "episodes": [_to_r2r(e) for e in episodes]}
    gt = {e.episode_id: {"locations": e.reference_path, "actions": e.extra.get("actions", []),
                         "forward_steps": int(e.extra.get("forward_steps", 0))} for e in episodes}
    path = directory / f"{split}.json.gz"
    _write_gz_atomic(path, data)
    _write_gz_atomic(directory / f"{split}_gt.json.gz", gt)
    return path


def load_episodes(path: str | Path) -> list[NavEpisode]:
    """Read our files or real R2R-CE / RxR-CE files (with their `_gt` file if present)."""
    path = Path(path)
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    zup = data.get(FRAME_KEY) == "z_up"
    gt_path = path.with_name(path.name.replace(".json.gz", "_gt.json.gz"))
    gt: dict[str, Any] = {}
    if gt_path.exists():
        with gzip.open(gt_path, "rt") as f:
            gt = json.load(f)
    return [_from_r2r(raw, zup, gt.get(str(raw["episode_id"]))) for raw in data["episodes"]]


def _to_r2r(e: NavEpisode) -> dict[str, Any]:
    d = asdict(e)
    d["goals"] = [{"position": g, "radius": e.success_distance} for g in e.goals]
    d["instruction"] = {"instruction_text": e.instruction}
    d["info"] = {"geodesic_distance": e.geodesic_distance}
    return d


def _from_r2r(raw: dict[str, Any], zup: bool, gt: dict[str, Any] | None) -> NavEpisode:
    conv = (lambda p: list(map(float, p))) if zup else yup_to_zup
    goals = raw.get("goals", [])
    instruction = raw.get("instruction", "")
    if isinstance(instruction, dict):
        instruction = instruction.get("instruction_text", "")
    if zup:
        yaw = float(raw["start_yaw"])
    else:
        yaw = quat_to_yaw_yup(raw.get("start_rotation", [0, 0, 0, 1]))
    reference = raw.get("reference_path") or (gt or {}).get("locations", [])
    return NavEpisode(
        episode_id=str(raw["episode_id"]),
        scene_id=str(raw["scene_id"]),
        start_position=conv(raw["start_position"]),
        start_yaw=yaw,
        goals=[conv(g["position"]) for g in goals],
        success_distance=float(goals[0].get("radius", 3.0)) if goals else 3.0,
        geodesic_distance=float((raw.get("info") or {}).get("geodesic_distance", float("nan"))),
        instruction=instruction,
        reference_path=[conv(p) for p in reference],
        object_category=str(raw.get("object_category", "")),
        target_object_ids=list(raw.get("target_object_ids", [])),
        tour_actions=list(raw.get("tour_actions", [])),
        extra=dict(raw.get("extra", {})),
    )


def _write_gz_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(data, f)
    tmp.replace(path)
