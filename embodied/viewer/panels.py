"""The page's panel payloads: plain JSON-ready dicts built from an env, its observations and the
policy's memory reads. Pure functions (no threads, no server): the session builds one payload per
frame and keeps it, so scrubbing back replays exactly what was shown live.

Images travel as PNG data URLs (no image server, no cache to invalidate). Geometry is in the
world frame of the navigation backend (metres, Z up, yaw about +Z; embodied/envs/sim/types.py).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from embodied.policies.traces import MemoryRead

THUMB = 32  # pixels: memory inspector thumbnails
CLOUD_STRIDE = 4  # every 4th pixel of the depth image in each direction goes into the 3D view


# ---------------------------------------------------------------------- images
def png_data_url(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(rgb: np.ndarray, size: int = THUMB) -> str:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.BILINEAR)
    return png_data_url(np.asarray(img))


def depth_rgb(depth: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth [H, W(, 1)] metres -> a near-bright, far-dark colour image (blue-yellow ramp)."""
    d = np.clip(np.asarray(depth, dtype=np.float32).reshape(depth.shape[0], depth.shape[1]) / max(max_depth, 1e-6),
                0.0, 1.0)
    near = 1.0 - d
    return (np.stack([near ** 0.8, near ** 1.2 * 0.9 + 0.05, 0.35 + 0.5 * d], -1) * 255).astype(np.uint8)


def label_rgb(ids: np.ndarray) -> np.ndarray:
    """Integer ids [H, W] -> a fixed colour per id (0 = structure, dark grey)."""
    ids = np.asarray(ids).astype(np.int64)
    h = (ids * 2654435761) & 0xFFFFFF
    rgb = np.stack([(h >> 16) & 255, (h >> 8) & 255, h & 255], -1)
    rgb = (rgb // 2 + 96).astype(np.uint8)
    rgb[ids == 0] = 40
    return rgb


# ---------------------------------------------------------------------- navigation
def nav_scene(env: Any) -> dict[str, Any]:
    """What the top-down map and the 3D view draw for an episode: the house (walls, objects as yawed
    boxes; absent on a scanned scene), the start, the goals and the reference path (VLN's, else the
    backend's shortest path from the start)."""
    u = env.unwrapped
    ep = u.episode
    out: dict[str, Any] = {"walls": [], "objects": [], "bounds": None, "goals": _xy(u.goals),
                           "start": [*map(float, ep.start_position[:2]), float(ep.start_yaw)],
                           "success_distance": float(ep.success_distance)}
    scene = u.scene
    if scene is not None:
        out["bounds"] = [float(b) for b in scene.bounds]
        out["walls"] = [[*map(float, w.position), *map(float, w.size), 0.0] for w in scene.walls]
        out["objects"] = [[*map(float, o.position), *map(float, o.size), float(o.yaw), o.id, o.category,
                           [round(float(c), 3) for c in o.rgba[:3]]] for o in scene.objects]
    reference = u.ndtw_reference()
    if reference is None:
        try:
            reference = u.backend.shortest_path(np.asarray(ep.start_position, dtype=np.float64), u.goals)
        except (RuntimeError, ValueError):  # no path on this backend / island: draw none
            reference = None
    out["reference"] = _xy(reference) if reference is not None and len(reference) else []
    return out


def _xy(points: Any) -> list[list[float]]:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, np.shape(points)[-1] if np.ndim(points) else 3)
    return [[round(float(p[0]), 3), round(float(p[1]), 3)] for p in pts]


def nav_task_text(env: Any, obs: Mapping[str, Any]) -> str:
    """The instruction, or what the task asks in words."""
    from embodied.envs.sim.scene import CATEGORIES

    if "instruction" in obs and str(obs["instruction"]):
        return str(obs["instruction"])
    if "objectgoal" in obs:
        return f"Find a {CATEGORIES[int(np.asarray(obs['objectgoal']).reshape(-1)[0])]}."
    if "pointgoal" in obs:
        d, phi = np.asarray(obs["pointgoal"], dtype=np.float64).reshape(2)
        return f"Go to the point {d:.2f} m away, {math.degrees(phi):+.0f}° from the heading."
    return type(env.unwrapped).__name__


def nav_images(env: Any, obs: Mapping[str, Any]) -> dict[str, str]:
    images = {"rgb": png_data_url(obs["rgb"])}
    if "depth" in obs:
        images["depth"] = png_data_url(depth_rgb(obs["depth"], env.unwrapped.sensor_cfg.max_depth))
    if "semantic_category" in obs:
        images["semantic"] = png_data_url(label_rgb(obs["semantic_category"]))
    elif "semantic" in obs:
        images["semantic"] = png_data_url(label_rgb(obs["semantic"]))
    return images


def agent_pose(env: Any) -> list[float]:
    pose = env.unwrapped.backend.get_agent_pose()
    return [round(float(pose.position[0]), 4), round(float(pose.position[1]), 4), round(float(pose.yaw), 4)]


def depth_points(depth: np.ndarray, rgb: np.ndarray, pose: list[float], hfov_deg: float, camera_height: float,
                 max_depth: float, stride: int = CLOUD_STRIDE) -> list[list[float]]:
    """Back-project the depth image (pinhole, depth along the optical axis, camera level at
    `camera_height`) into world points [x, y, z, r, g, b] for the 3D view."""
    d = np.asarray(depth, dtype=np.float64).reshape(depth.shape[0], depth.shape[1])[::stride, ::stride]
    h, w = np.asarray(depth).shape[:2]
    f = (w / 2) / math.tan(math.radians(hfov_deg) / 2)
    v, u = np.mgrid[0:h:stride, 0:w:stride].astype(np.float64)
    ok = (d > 0.05) & (d < max_depth * 0.999)
    fwd, left, up = d, -(u + 0.5 - w / 2) / f * d, -(v + 0.5 - h / 2) / f * d
    c, s = math.cos(pose[2]), math.sin(pose[2])
    x = pose[0] + c * fwd - s * left
    y = pose[1] + s * fwd + c * left
    z = camera_height + up
    col = np.asarray(rgb)[::stride, ::stride].reshape(-1, 3)[ok.ravel()]
    pts = np.stack([x[ok], y[ok], z[ok]], -1)
    return [[round(float(a), 2) for a in p] + [int(k) for k in cc] for p, cc in zip(pts, col)]


def start_frame_to_world(points: np.ndarray, start: list[float]) -> np.ndarray:
    """Points in the episode-start frame (the GPS frame) -> world frame."""
    c, s = math.cos(start[2]), math.sin(start[2])
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return np.stack([start[0] + c * p[:, 0] - s * p[:, 1], start[1] + s * p[:, 0] + c * p[:, 1], p[:, 2]], -1)


# ---------------------------------------------------------------------- LIBERO
def libero_images(obs: Mapping[str, Any]) -> dict[str, str]:
    return {k.removesuffix("_rgb"): png_data_url(v) for k, v in obs.items() if k.endswith("_rgb")}


def libero_state(obs: Mapping[str, Any]) -> dict[str, list[float]]:
    """The 8-d robot state: end-effector position (m), axis-angle orientation (rad), gripper joints."""
    s = np.asarray(obs["state"], dtype=np.float64).reshape(-1)
    return {"eef_pos": [round(float(v), 4) for v in s[:3]], "eef_axis_angle": [round(float(v), 4) for v in s[3:6]],
            "gripper_qpos": [round(float(v), 4) for v in s[6:8]]}


# ---------------------------------------------------------------------- memory inspector
def memory_payload(reads: Mapping[str, MemoryRead], thumb: Callable[[int], str | None],
                   start: list[float] | None = None) -> list[dict[str, Any]]:
    """One entry per memory read of this step, shaped for the inspector; `thumb(t)` gives the thumbnail
    of the episode's frame t (None when unknown), `start` the episode start pose for map points."""
    out = []
    for name, read in reads.items():
        build = _BUILDERS[read.kind]
        out.append({"name": name, "kind": read.kind, **build(read.trace, read.facts, thumb, start)})
    return out


def _i(v: Any) -> int:
    return int(np.asarray(v).reshape(-1)[0])


def _hcam(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    """The k chunks the read chose: slot, episode steps covered, weight (softmax over the chosen chunks'
    scores), and thumbnails of the frames in each."""
    size = int(facts.get("chunk_size", 1))
    chunks = []
    idx, w, ok, t0 = (tr[k].reshape(-1) for k in ("indices", "weights", "selected_valid", "chunk_start_t"))
    for slot, weight, valid, first in zip(idx, w, ok, t0):
        if not valid:
            continue
        frames = list(range(int(first), int(first) + size))
        chunks.append({"slot": int(slot), "start": int(first), "end": int(first) + size - 1,
                       "weight": round(float(weight), 4), "thumbs": [thumb(t) for t in frames]})
    chunks.sort(key=lambda c: -c["weight"])
    summary = {"occupancy": _i(tr["occupancy"]), "chunks": chunks, "chunk_size": size}
    if "chunk_written" in tr:
        summary["chunk_written"] = bool(np.asarray(tr["chunk_written"]).reshape(-1)[0])
    return summary


def _place(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    """The place chunks the read chose (entries grouped by place id, not by time): place id and weight."""
    chunks = [{"slot": int(slot), "place": int(place), "weight": round(float(weight), 4)}
              for slot, place, weight, valid in zip(*(tr[k].reshape(-1) for k in (
                  "indices", "chunk_place", "weights", "selected_valid"))) if valid]
    chunks.sort(key=lambda c: -c["weight"])
    return {"occupancy": _i(tr["occupancy"]), "chunks": chunks}


def _pcmb(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    """Every stored entry of the perceptual-cognitive bank: its step, the attention mass the perceptual
    and the cognitive read gave it, and this step's consolidation (the merged pair's similarity)."""
    n = _i(tr["occupancy"])
    per_t, cog_t = tr["per_t"].reshape(-1), tr["cog_t"].reshape(-1)
    pw, cw = tr["per_entry_weights"].reshape(-1), tr["cog_entry_weights"].reshape(-1)
    entries = [{"t": int(per_t[i]), "cog_t": int(cog_t[i]), "per_weight": round(float(pw[i]), 4),
                "cog_weight": round(float(cw[i]), 4), "thumb": thumb(int(per_t[i]))} for i in range(min(n, len(per_t)))]
    out: dict[str, Any] = {"occupancy": n, "capacity": int(facts.get("capacity", len(per_t))), "entries": entries}
    for key in ("per_merge_index", "per_merge_similarity", "cog_merge_index", "cog_merge_similarity"):
        if key in tr:
            out[key] = round(float(np.asarray(tr[key]).reshape(-1)[0]), 4)
    return out


def _events(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    """The events retrieved (by similarity or as their temporal neighbours), with their weights."""
    events = []
    for valid, ordinal, first, weight, contiguity in zip(*(tr[k].reshape(-1) for k in (
            "event_valid", "event_ord", "event_start_t", "event_weights", "from_contiguity"))):
        if valid:
            events.append({"ord": int(ordinal), "start": int(first), "weight": round(float(weight), 4),
                           "contiguity": bool(contiguity), "thumb": thumb(int(first))})
    return {"closed_events": _i(tr["n_closed"]), "events": events}


def _dual_kv(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    """The frames the start and the recent windows keep, in slot order."""
    kept = [int(f) for f in tr["kept_frames"].reshape(-1) if f >= 0]
    n0 = int(facts.get("n_initial", 0))
    initial, recent = kept[:n0], kept[n0:]
    return {"occupancy": _i(tr["occupancy"]), "n_initial": n0, "n_recent": int(facts.get("n_recent", 0)),
            "initial": [{"t": t, "thumb": thumb(t)} for t in initial],
            "recent": [{"t": t, "thumb": thumb(t)} for t in recent[-8:]], "recent_count": len(recent)}


def _voxel_map(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    """The map's size, this frame's fused points and the map's voxel centres (for the 3D view)."""
    out: dict[str, Any] = {"voxels": _i(tr["voxels"]), "points_written": _i(tr["points"]),
                           "voxel_size": float(facts.get("voxel_size", 0.0))}
    if "points_xyz" in tr:
        pts = np.asarray(tr["points_xyz"]).reshape(-1, 3)
        if start is not None:
            pts = start_frame_to_world(pts, start)
        labels = np.asarray(tr["points_label"]).reshape(-1)
        rgb = label_rgb(labels)
        out["cloud"] = [[round(float(a), 2) for a in p] + [int(k) for k in c] for p, c in zip(pts, rgb)]
    return out


def _gru(tr: dict[str, np.ndarray], facts: dict[str, Any], thumb: Callable, start: Any) -> dict[str, Any]:
    return {"hidden_norm": round(float(np.asarray(tr["hidden_norm"]).reshape(-1)[0]), 4)}


_BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "hcam": _hcam, "place": _place, "pcmb": _pcmb, "events": _events, "dual_kv": _dual_kv,
    "voxel_map": _voxel_map, "gru": _gru,
}
