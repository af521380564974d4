"""Plain-data scene description shared by every backend (MuJoCo, habitat, viewers).

Everything is a dataclass of floats, ints, strings and tuples so a scene round-trips
through JSON exactly (`Scene.to_json` / `Scene.from_json`) and can be shipped to a worker
process or cached on disk (`save` writes a file atomically, `load` reads it back). World
frame as in `types.py`: Z up, metres, floor at z = 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

# Global category table: the index is the category id. Index 0 is structure/background
# (walls, floor, ceiling) so that `CATEGORIES.index(name)` is also the id written into
# semantic-category images, and ids never change when categories are appended at the end.
FURNITURE = ("sofa", "bed", "table", "chair", "cabinet", "shelf", "desk", "armchair",
             "dresser", "tv stand", "counter", "bathtub", "toilet", "sink", "wardrobe")
SMALL = ("lamp", "plant", "vase", "book", "mug", "box", "basket", "bin", "ball", "guitar")
CATEGORIES: list[str] = ["structure", *FURNITURE, *SMALL]

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.80, 0.12, 0.12, 1.0),
    "green": (0.15, 0.62, 0.20, 1.0),
    "blue": (0.15, 0.30, 0.85, 1.0),
    "yellow": (0.92, 0.85, 0.15, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
    "black": (0.08, 0.08, 0.08, 1.0),
    "orange": (0.95, 0.50, 0.10, 1.0),
    "purple": (0.55, 0.20, 0.70, 1.0),
    "brown": (0.50, 0.30, 0.15, 1.0),
    "grey": (0.50, 0.50, 0.50, 1.0),
}

# How the structure looks (objects carry their own rgba): shared by every exporter.
WALL_RGBA = (0.88, 0.86, 0.82, 1.0)
CEILING_RGBA = (0.95, 0.95, 0.95, 1.0)
FLOOR_TINTS = ((0.62, 0.52, 0.40), (0.55, 0.58, 0.62), (0.66, 0.62, 0.52), (0.50, 0.56, 0.48),
               (0.60, 0.50, 0.52), (0.56, 0.54, 0.60), (0.68, 0.60, 0.46), (0.52, 0.50, 0.46))

Vec2 = tuple[float, float]
Vec3 = tuple[float, float, float]


def category_id(name: str) -> int:
    """Stable id of a category name (0 is structure)."""
    return CATEGORIES.index(name)


@dataclass
class Room:
    """A rectangular room; `polygon` is counter-clockwise on the wall centre lines."""

    id: int
    name: str
    polygon: list[Vec2]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.polygon], [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bounds
        return (x1 - x0) * (y1 - y0)


@dataclass
class Box:
    """A static box (wall piece, floor, ceiling): centre and full extents, axis aligned."""

    position: Vec3
    size: Vec3


@dataclass
class Door:
    """An opening in the wall between two rooms; `axis` is the wall direction (0 = along x)."""

    rooms: tuple[int, int]
    position: Vec2
    width: float
    axis: int


@dataclass
class SceneObject:
    """A furniture piece or small object, modelled as a (yawed) box."""

    id: int  # semantic object id, >= 1
    category: str
    category_id: int
    colour: str
    rgba: tuple[float, float, float, float]
    position: Vec3  # box centre
    yaw: float
    size: Vec3  # full extents in the object frame
    room: int
    kind: str  # "furniture" | "small"


@dataclass
class Scene:
    seed: int
    bounds: tuple[float, float, float, float]  # floor (xmin, ymin, xmax, ymax) on wall centre lines
    wall_height: float
    wall_thickness: float
    rooms: list[Room] = field(default_factory=list)
    walls: list[Box] = field(default_factory=list)
    doors: list[Door] = field(default_factory=list)
    objects: list[SceneObject] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        """Inverse of `to_dict`; restores tuples so `from_dict(to_dict(s)) == s`."""
        return cls(
            seed=int(d["seed"]),
            bounds=tuple(d["bounds"]),
            wall_height=float(d["wall_height"]),
            wall_thickness=float(d["wall_thickness"]),
            rooms=[Room(r["id"], r["name"], [tuple(p) for p in r["polygon"]]) for r in d["rooms"]],
            walls=[Box(tuple(w["position"]), tuple(w["size"])) for w in d["walls"]],
            doors=[Door(tuple(o["rooms"]), tuple(o["position"]), o["width"], o["axis"]) for o in d["doors"]],
            objects=[_object_from_dict(o) for o in d["objects"]],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(json.loads(text))

    def save(self, path: str) -> None:
        """Write the scene as JSON (temp file + rename: never a half-written file)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Scene:
        with open(path) as f:
            return cls.from_json(f.read())

    def object_by_id(self, object_id: int) -> SceneObject:
        return next(o for o in self.objects if o.id == object_id)

    def room_by_id(self, room_id: int) -> Room:
        return next(r for r in self.rooms if r.id == room_id)


def _object_from_dict(o: dict[str, Any]) -> SceneObject:
    return SceneObject(
        id=o["id"], category=o["category"], category_id=o["category_id"], colour=o["colour"],
        rgba=tuple(o["rgba"]), position=tuple(o["position"]), yaw=o["yaw"], size=tuple(o["size"]),
        room=o["room"], kind=o["kind"],
    )
