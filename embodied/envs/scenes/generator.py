"""Seeded procedural multi-room houses.

A house is a rectangle split recursively into 2-8 rectangular rooms; a random spanning
tree over the room adjacency graph (plus a few extra links) gets door openings, so every
room is reachable. Furniture and small objects are dropped into rooms by rejection
sampling: inside the room, no overlaps, never in front of a door, and each accepted
object must keep the free floor (inflated by the agent radius plus a margin) connected.
Only `np.random.default_rng(seed)` is used, so a seed gives the same house everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from embodied.envs.sim.navgrid import largest_component, rasterize
from embodied.envs.sim.scene import COLOURS, Box, Door, Room, Scene, SceneObject, category_id

SPLIT_SEEDS: dict[str, range] = {
    "train": range(0, 10_000),
    "val_seen": range(0, 100),  # seen houses, new episodes (like R2R val_seen)
    "val_unseen": range(100_000, 101_000),
    "test": range(200_000, 201_000),
}

WALL_HEIGHT, WALL_THICKNESS = 2.5, 0.1
MIN_ROOM = 2.6  # metres, shortest room side
DOOR_MARGIN = 0.25  # door edge to the nearest wall corner
DOOR_CLEAR_DEPTH = 0.9  # kept free in front of each door, both sides
CONNECT_RADIUS = 0.18 + 0.1  # agent radius plus margin used for the connectivity check
ROOM_NAMES = ("kitchen", "bedroom", "bathroom", "office", "hallway", "dining room", "laundry room",
              "guest room", "study")

# footprint/height ranges (x, y, z) in metres, before a +-12% scale jitter
FURNITURE_SIZES: dict[str, tuple[float, float, float]] = {
    "sofa": (2.0, 0.9, 0.85), "bed": (2.0, 1.5, 0.6), "table": (1.4, 0.9, 0.75), "chair": (0.5, 0.5, 0.9),
    "cabinet": (1.0, 0.5, 1.0), "shelf": (1.0, 0.4, 1.8), "desk": (1.3, 0.7, 0.75), "armchair": (0.9, 0.85, 0.9),
    "dresser": (1.2, 0.5, 0.9), "tv stand": (1.5, 0.45, 0.55), "counter": (1.8, 0.6, 0.9),
    "bathtub": (1.7, 0.8, 0.6), "toilet": (0.45, 0.65, 0.8), "sink": (0.6, 0.5, 0.9), "wardrobe": (1.2, 0.6, 2.0),
}
SMALL_SIZES: dict[str, tuple[float, float, float]] = {
    "lamp": (0.35, 0.35, 1.5), "plant": (0.45, 0.45, 1.0), "vase": (0.3, 0.3, 0.6), "book": (0.3, 0.25, 0.3),
    "mug": (0.25, 0.25, 0.3), "box": (0.5, 0.4, 0.4), "basket": (0.45, 0.45, 0.4), "bin": (0.35, 0.35, 0.5),
    "ball": (0.35, 0.35, 0.35), "guitar": (0.4, 0.3, 1.0),
}
ROOM_FURNITURE: dict[str, tuple[str, ...]] = {
    "living room": ("sofa", "armchair", "table", "tv stand", "shelf", "cabinet", "chair"),
    "kitchen": ("counter", "table", "chair", "cabinet", "shelf"),
    "bedroom": ("bed", "wardrobe", "dresser", "desk", "chair", "shelf"),
    "guest room": ("bed", "wardrobe", "dresser", "armchair"),
    "bathroom": ("bathtub", "toilet", "sink", "cabinet"),
    "office": ("desk", "chair", "shelf", "cabinet", "armchair"),
    "study": ("desk", "chair", "shelf", "armchair", "sofa"),
    "hallway": ("cabinet", "shelf", "chair"),
    "dining room": ("table", "chair", "cabinet", "shelf"),
    "laundry room": ("cabinet", "shelf", "counter", "sink"),
}


def split_scene_seeds(split: str, n: int | None = None) -> list[int]:
    """The first `n` scene seeds of a split (all of them when n is None)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {list(SPLIT_SEEDS)}, got '{split}'")
    seeds = SPLIT_SEEDS[split]
    return list(seeds if n is None else seeds[:n])


def generate_scene(seed: int, n_rooms: tuple[int, int] = (2, 8), furniture_per_m2: float = 1 / 7,
                   small_per_room: tuple[int, int] = (1, 3)) -> Scene:
    """A deterministic house for `seed` with between n_rooms[0] and n_rooms[1] rooms."""
    rng = np.random.default_rng(seed)
    target = int(rng.integers(n_rooms[0], n_rooms[1] + 1))
    for _ in range(100):
        rects = _split_house(rng, target)
        links = _door_links(rng, rects)
        if links is not None:
            break
    else:  # pragma: no cover - a plain two-room house always links
        raise RuntimeError(f"could not lay out a connected house for seed {seed}")
    rooms = _name_rooms(rng, rects)
    bounds = (min(r[0] for r in rects), min(r[1] for r in rects), max(r[2] for r in rects), max(r[3] for r in rects))
    doors = [_make_door(rng, a, b, rects) for a, b in links]
    walls = _make_walls(rects, bounds, doors)
    scene = Scene(seed=seed, bounds=bounds, wall_height=WALL_HEIGHT, wall_thickness=WALL_THICKNESS,
                  rooms=rooms, walls=walls, doors=doors)
    _furnish(rng, scene, furniture_per_m2, small_per_room)
    return scene


# ----------------------------------------------------------------------------- layout
Rect = tuple[float, float, float, float]


def _split_house(rng: np.random.Generator, n: int) -> list[Rect]:
    """Recursively split the largest splittable rectangle across its longer side."""
    area = n * rng.uniform(12.0, 20.0)
    aspect = rng.uniform(0.7, 1.4)
    w, h = round(math.sqrt(area * aspect), 2), round(math.sqrt(area / aspect), 2)
    rects: list[Rect] = [(0.0, 0.0, w, h)]
    while len(rects) < n:
        order = sorted(range(len(rects)), key=lambda i: -_area(rects[i]))
        for i in order:
            parts = _split_rect(rng, rects[i])
            if parts is not None:
                rects[i:i + 1] = parts
                break
        else:
            break
    return rects


def _area(r: Rect) -> float:
    return (r[2] - r[0]) * (r[3] - r[1])


def _split_rect(rng: np.random.Generator, r: Rect) -> list[Rect] | None:
    x0, y0, x1, y1 = r
    axis = 0 if (x1 - x0) >= (y1 - y0) else 1
    lo, hi = (x0, x1) if axis == 0 else (y0, y1)
    if hi - lo < 2 * MIN_ROOM:
        return None
    a, b = max(lo + MIN_ROOM, lo + 0.35 * (hi - lo)), min(hi - MIN_ROOM, lo + 0.65 * (hi - lo))
    cut = round(float(rng.uniform(a, b)), 2)
    return [(x0, y0, cut, y1), (cut, y0, x1, y1)] if axis == 0 else [(x0, y0, x1, cut), (x0, cut, x1, y1)]


def _shared_edge(a: Rect, b: Rect) -> tuple[int, float, float, float] | None:
    """(axis of the wall, fixed coordinate, start, end) of the wall shared by two rooms, if any."""
    for axis, (fa, fb) in ((1, (a[2], b[0])), (1, (b[2], a[0])), (0, (a[3], b[1])), (0, (b[3], a[1]))):
        if abs(fa - fb) > 1e-6:
            continue
        # axis 1: vertical wall at x = fa spanning y; axis 0: horizontal wall at y = fa spanning x
        lo, hi = (max(a[1], b[1]), min(a[3], b[3])) if axis == 1 else (max(a[0], b[0]), min(a[2], b[2]))
        if hi - lo > 1e-6:
            return axis, fa, lo, hi
    return None


def _door_links(rng: np.random.Generator, rects: list[Rect]) -> list[tuple[int, int]] | None:
    """Random spanning tree over rooms whose shared wall fits a door, plus ~25% extra links."""
    need = 1.0 + 2 * DOOR_MARGIN
    edges = [(i, j) for i in range(len(rects)) for j in range(i + 1, len(rects))
             if (e := _shared_edge(rects[i], rects[j])) is not None and e[3] - e[2] >= need]
    order = rng.permutation(len(edges))
    parent = list(range(len(rects)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    links, extra = [], []
    for e in (edges[k] for k in order):
        ra, rb = find(e[0]), find(e[1])
        if ra != rb:
            parent[ra] = rb
            links.append(e)
        else:
            extra.append(e)
    if len({find(k) for k in range(len(rects))}) != 1:
        return None
    links += [e for e in extra if rng.random() < 0.25]
    return sorted(links)


def _name_rooms(rng: np.random.Generator, rects: list[Rect]) -> list[Room]:
    """The largest room is the living room; the others get distinct names."""
    names = list(rng.permutation(ROOM_NAMES))
    biggest = int(np.argmax([_area(r) for r in rects]))
    rooms = []
    for i, (x0, y0, x1, y1) in enumerate(rects):
        name = "living room" if i == biggest else str(names.pop())
        rooms.append(Room(id=i + 1, name=name, polygon=[(x0, y0), (x1, y0), (x1, y1), (x0, y1)]))
    return rooms


def _make_door(rng: np.random.Generator, a: int, b: int, rects: list[Rect]) -> Door:
    axis, fixed, lo, hi = _shared_edge(rects[a], rects[b])  # type: ignore[misc]
    width = round(float(rng.uniform(0.9, 1.0)), 3)
    c = round(float(rng.uniform(lo + DOOR_MARGIN + width / 2, hi - DOOR_MARGIN - width / 2)), 3)
    pos = (c, fixed) if axis == 0 else (fixed, c)
    return Door(rooms=(a + 1, b + 1), position=pos, width=width, axis=axis)


def _make_walls(rects: list[Rect], bounds: Rect, doors: list[Door]) -> list[Box]:
    """Exterior walls plus one wall per shared edge, cut at its door; ends overlap corners by t/2."""
    x0, y0, x1, y1 = bounds
    segs = [(0, y0, x0, x1), (0, y1, x0, x1), (1, x0, y0, y1), (1, x1, y0, y1)]
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            if (e := _shared_edge(rects[i], rects[j])) is not None:
                segs.append(e)
    walls = []
    for axis, fixed, lo, hi in segs:
        cuts = sorted((d.position[axis] - d.width / 2, d.position[axis] + d.width / 2) for d in doors
                      if d.axis == axis and abs(d.position[1 - axis] - fixed) < 1e-6 and lo < d.position[axis] < hi)
        start = lo - WALL_THICKNESS / 2
        for c0, c1 in [*cuts, (hi + WALL_THICKNESS / 2, None)]:
            if c0 - start > 1e-6:
                walls.append(_wall_box(axis, fixed, start, c0))
            start = c1 if c1 is not None else start
    return walls


def _wall_box(axis: int, fixed: float, a: float, b: float) -> Box:
    mid, length = round((a + b) / 2, 4), round(b - a, 4)
    if axis == 0:
        return Box(position=(mid, fixed, WALL_HEIGHT / 2), size=(length, WALL_THICKNESS, WALL_HEIGHT))
    return Box(position=(fixed, mid, WALL_HEIGHT / 2), size=(WALL_THICKNESS, length, WALL_HEIGHT))


# ----------------------------------------------------------------------------- furniture
def _furnish(rng: np.random.Generator, scene: Scene, per_m2: float, small: tuple[int, int]) -> None:
    """Place furniture then small objects, room by room, keeping the free floor connected."""
    keepout = [_door_keepout(d) for d in scene.doors]
    placed: list[tuple[float, float, float, float]] = []  # AABB footprints of accepted objects
    used: list[tuple[str, str]] = []  # (category, colour) seen so far: reused to make distractors
    for room in scene.rooms:
        n_furn = int(np.clip(round(room.area * per_m2 + rng.uniform(-0.5, 0.5)), 1, 5))
        n_small = int(rng.integers(small[0], small[1] + 1))
        pool = ROOM_FURNITURE.get(room.name, tuple(FURNITURE_SIZES))
        plan = [("furniture", str(rng.choice(pool))) for _ in range(n_furn)]
        plan += [("small", str(rng.choice(list(SMALL_SIZES)))) for _ in range(n_small)]
        for kind, cat in plan:
            colour = _pick_colour(rng, cat, used)
            obj = _place(rng, scene, room, kind, cat, colour, placed, keepout)
            if obj is not None:
                scene.objects.append(obj)
                used.append((cat, colour))


def _pick_colour(rng: np.random.Generator, cat: str, used: list[tuple[str, str]]) -> str:
    """Usually random; sometimes the colour of an earlier same-category object (a distractor)."""
    same = [c for k, c in used if k == cat]
    if same and rng.random() < 0.35:
        return same[int(rng.integers(len(same)))]
    return str(rng.choice(list(COLOURS)))


def _door_keepout(d: Door) -> tuple[float, float, float, float]:
    half_w = d.width / 2 + 0.15
    if d.axis == 0:
        return (d.position[0] - half_w, d.position[1] - DOOR_CLEAR_DEPTH, d.position[0] + half_w,
                d.position[1] + DOOR_CLEAR_DEPTH)
    return (d.position[0] - DOOR_CLEAR_DEPTH, d.position[1] - half_w, d.position[0] + DOOR_CLEAR_DEPTH,
            d.position[1] + half_w)


def _overlaps(a: tuple[float, ...], b: tuple[float, ...], gap: float = 0.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _place(rng: np.random.Generator, scene: Scene, room: Room, kind: str, cat: str, colour: str,
           placed: list[tuple[float, float, float, float]], keepout: list) -> SceneObject | None:
    """Rejection-sample a pose; furniture prefers to stand against a wall."""
    base = FURNITURE_SIZES[cat] if kind == "furniture" else SMALL_SIZES[cat]
    size = tuple(round(max(0.25, float(v * rng.uniform(0.88, 1.12))), 3) for v in base)
    x0, y0, x1, y1 = room.bounds
    inset = WALL_THICKNESS / 2 + 0.03
    for _ in range(30):
        quarter = int(rng.integers(4))
        yaw = quarter * math.pi / 2
        fx, fy = (size[0], size[1]) if quarter % 2 == 0 else (size[1], size[0])
        lo_x, hi_x, lo_y, hi_y = x0 + inset + fx / 2, x1 - inset - fx / 2, y0 + inset + fy / 2, y1 - inset - fy / 2
        if lo_x > hi_x or lo_y > hi_y:
            continue
        cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
        if kind == "furniture" and rng.random() < 0.7:  # snap to the nearest wall
            cx, cy = _snap_to_wall(cx, cy, lo_x, hi_x, lo_y, hi_y)
        cx, cy = round(cx, 3), round(cy, 3)
        fp = (cx - fx / 2, cy - fy / 2, cx + fx / 2, cy + fy / 2)
        if any(_overlaps(fp, k) for k in keepout) or any(_overlaps(fp, p, 0.05) for p in placed):
            continue
        if not _keeps_connected(scene, fp, placed):
            continue
        placed.append(fp)
        return SceneObject(id=len(scene.objects) + 1, category=cat, category_id=category_id(cat), colour=colour,
                           rgba=COLOURS[colour], position=(cx, cy, round(size[2] / 2, 4)), yaw=round(yaw, 6),
                           size=size, room=room.id, kind=kind)
    return None


def _snap_to_wall(cx: float, cy: float, lo_x: float, hi_x: float, lo_y: float, hi_y: float) -> tuple[float, float]:
    gaps = [(cx - lo_x, lo_x, cy), (hi_x - cx, hi_x, cy), (cy - lo_y, cx, lo_y), (hi_y - cy, cx, hi_y)]
    _, x, y = min(gaps)
    return x, y


def _keeps_connected(scene: Scene, fp: tuple[float, ...], placed: list) -> bool:
    """Free floor (inflated by CONNECT_RADIUS) stays one component and still touches every room."""
    rows = [(w.position[0], w.position[1], w.size[0] / 2, w.size[1] / 2, 0.0) for w in scene.walls]
    rows += [((p[0] + p[2]) / 2, (p[1] + p[3]) / 2, (p[2] - p[0]) / 2, (p[3] - p[1]) / 2, 0.0) for p in [*placed, fp]]
    cell = 0.1
    free, origin = rasterize(np.asarray(rows), scene.bounds, cell, CONNECT_RADIUS)
    main = largest_component(free)
    if (free & ~main).sum() > 0.02 * free.sum():  # a sizeable pocket got cut off
        return False
    for room in scene.rooms:
        rx0, ry0, rx1, ry1 = room.bounds
        i0, j0 = int((rx0 - origin[0]) / cell), int((ry0 - origin[1]) / cell)
        i1, j1 = int((rx1 - origin[0]) / cell), int((ry1 - origin[1]) / cell)
        if not main[i0:i1, j0:j1].any():
            return False
    return True
