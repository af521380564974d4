"""Scene -> `.glb` meshes for `HabitatBackend` (and any viewer that reads glTF)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .scene import CEILING_RGBA, FLOOR_TINTS, WALL_RGBA, Scene

if TYPE_CHECKING:
    import trimesh


def _frame_matrix(frame: str) -> np.ndarray:
    """4x4 transform from our Z-up world to the written frame.

    "y_up" (glTF's convention, what habitat assumes for a bare .glb): (x, y, z) -> (x, z, -y),
    the inverse of the readers' `zup = (x, -z, y)` (see `types.py`). "z_up": identity.
    """
    if frame == "z_up":
        return np.eye(4)
    if frame == "y_up":
        m = np.eye(4)
        m[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
        return m
    raise ValueError(f"frame must be 'y_up' or 'z_up', got '{frame}'")


def _box_mesh(pos, size, rgba, yaw: float = 0.0) -> trimesh.Trimesh:
    import trimesh

    m = trimesh.creation.box(extents=size)
    tf = trimesh.transformations.rotation_matrix(yaw, [0, 0, 1])
    tf[:3, 3] = pos
    m.apply_transform(tf)
    m.visual.face_colors = (np.asarray(rgba) * 255).astype(np.uint8)
    return m


def scene_meshes(scene: Scene, ceiling: bool = False) -> tuple[trimesh.Trimesh, dict[int, trimesh.Trimesh]]:
    """Static structure (floors, walls[, ceiling]) as one mesh and one mesh per object id, Z-up world frame."""
    import trimesh

    parts = []
    for k, room in enumerate(scene.rooms):
        x0, y0, x1, y1 = room.bounds
        parts.append(_box_mesh(((x0 + x1) / 2, (y0 + y1) / 2, -0.05), (x1 - x0, y1 - y0, 0.1),
                               (*FLOOR_TINTS[k % len(FLOOR_TINTS)], 1.0)))
    parts += [_box_mesh(w.position, w.size, WALL_RGBA) for w in scene.walls]
    if ceiling:
        xmin, ymin, xmax, ymax = scene.bounds
        parts.append(_box_mesh(((xmin + xmax) / 2, (ymin + ymax) / 2, scene.wall_height + 0.05),
                               (xmax - xmin, ymax - ymin, 0.1), CEILING_RGBA))
    structure = trimesh.util.concatenate(parts)
    objects = {o.id: _box_mesh(o.position, o.size, o.rgba, o.yaw) for o in scene.objects}
    return structure, objects


def export_glb(scene: Scene, path: str | Path, frame: str = "y_up", ceiling: bool = False) -> dict[int, Path]:
    """Write `path` (structure, semantic id 0) and `<stem>_obj<id>.glb` per object; returns id -> file.

    Object meshes are in world coordinates (add them at the identity pose). `frame="y_up"`
    (default) writes glTF's Y-up axes, i.e. a habitat point is (x, z, -y) of ours.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tf = _frame_matrix(frame)
    structure, objects = scene_meshes(scene, ceiling=ceiling)
    structure.apply_transform(tf)
    structure.export(path)
    out = {}
    for oid, mesh in objects.items():
        mesh.apply_transform(tf)
        p = path.with_name(f"{path.stem}_obj{oid}.glb")
        mesh.export(p)
        out[oid] = p
    return out
