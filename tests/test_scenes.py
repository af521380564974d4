"""Procedural houses: determinism, serialisation, splits, layout validity, exporters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embodied.envs.scenes import (
    CATEGORIES,
    COLOURS,
    SPLIT_SEEDS,
    Scene,
    generate_scene,
    split_scene_seeds,
)
from embodied.envs.scenes.generator import _door_keepout
from embodied.envs.sim.habitat_scene import export_glb
from embodied.envs.sim.mujoco_scene import to_mjspec
from embodied.envs.sim.navgrid import NavGrid
from embodied.envs.sim.types import AgentConfig, SensorConfig

SEEDS = [0, 1, 7, 42, 100_003, 100_017, 200_001, 9_999]


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(s) for s in SEEDS]


def footprint(o) -> tuple[float, float, float, float]:
    """AABB of an object footprint; yaw is a multiple of 90 degrees by construction."""
    quarter = round(o.yaw / (math.pi / 2))
    assert abs(o.yaw - quarter * math.pi / 2) < 1e-5
    fx, fy = (o.size[0], o.size[1]) if quarter % 2 == 0 else (o.size[1], o.size[0])
    return o.position[0] - fx / 2, o.position[1] - fy / 2, o.position[0] + fx / 2, o.position[1] + fy / 2


def test_same_seed_same_json():
    assert generate_scene(123).to_json() == generate_scene(123).to_json()
    assert generate_scene(123).to_json() != generate_scene(124).to_json()


def test_json_round_trip(scenes):
    for s in scenes:
        back = Scene.from_json(s.to_json())
        assert back == s
        assert back.to_json() == s.to_json()


def test_splits():
    train = set(SPLIT_SEEDS["train"])
    unseen, test = set(SPLIT_SEEDS["val_unseen"]), set(SPLIT_SEEDS["test"])
    assert not train & unseen and not train & test and not unseen & test
    assert set(SPLIT_SEEDS["val_seen"]) <= train  # "seen" houses are training houses, as in R2R
    assert split_scene_seeds("val_unseen", 3) == [100_000, 100_001, 100_002]
    assert len(split_scene_seeds("train")) == 10_000
    with pytest.raises(ValueError):
        split_scene_seeds("nope")


def test_rooms_and_categories(scenes):
    for s in scenes:
        assert 2 <= len(s.rooms) <= 8
        assert len({r.id for r in s.rooms}) == len(s.rooms)
        assert len(s.doors) >= len(s.rooms) - 1
        ids = [o.id for o in s.objects]
        assert len(set(ids)) == len(ids) and min(ids) >= 1
        for o in s.objects:
            assert o.category_id == CATEGORIES.index(o.category) >= 1
            assert o.colour in COLOURS and tuple(o.rgba) == COLOURS[o.colour]
            assert min(o.size) >= 0.25 and o.kind in ("furniture", "small")
            assert abs(o.position[2] - o.size[2] / 2) < 1e-3  # stands on the floor
    # distractors: some category repeats within the benchmark scenes
    assert any(len({o.category for o in s.objects}) < len(s.objects) for s in scenes)


def test_objects_inside_rooms_no_overlap_no_door_blocking(scenes):
    for s in scenes:
        fps = [footprint(o) for o in s.objects]
        for o, fp in zip(s.objects, fps):
            x0, y0, x1, y1 = s.room_by_id(o.room).bounds
            assert x0 < fp[0] and fp[2] < x1 and y0 < fp[1] and fp[3] < y1
            for d in s.doors:
                k = _door_keepout(d)
                assert not (fp[0] < k[2] and k[0] < fp[2] and fp[1] < k[3] and k[1] < fp[3])
        for i in range(len(fps)):
            for j in range(i + 1, len(fps)):
                a, b = fps[i], fps[j]
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (s.seed, i, j)


@pytest.mark.parametrize("seed", list(range(100_000, 100_012)))
def test_all_rooms_reachable(seed):
    s = generate_scene(seed)
    grid = NavGrid(s)
    for room in s.rooms:
        x0, y0, x1, y1 = room.bounds
        i0, j0 = grid.to_cell(np.array([x0, y0]))
        i1, j1 = grid.to_cell(np.array([x1, y1]))
        assert grid.navigable[i0:i1, j0:j1].sum() > 20, (seed, room.name)
    # the main component holds almost all free floor
    assert grid.navigable.sum() > 0.97 * grid.free.sum()


def test_to_mjspec_compiles(scenes):
    spec, names = to_mjspec(scenes[0], AgentConfig(), SensorConfig())
    model = spec.compile()
    assert len(names) == len(scenes[0].objects)
    assert model.nmocap == 1 and model.ncam == 1


def test_export_glb(tmp_path, scenes):
    trimesh = pytest.importorskip("trimesh")
    s = scenes[0]
    files = export_glb(s, tmp_path / "house.glb")
    assert set(files) == {o.id for o in s.objects}
    structure = trimesh.load(tmp_path / "house.glb", force="mesh")
    lo, hi = structure.bounds
    assert abs(hi[1] - s.wall_height) < 1e-4 and abs(lo[1] + 0.1) < 1e-4  # Y is up
    o = s.objects[0]
    mesh = trimesh.load(files[o.id], force="mesh")
    centre = mesh.bounds.mean(axis=0)
    np.testing.assert_allclose(centre, [o.position[0], o.position[2], -o.position[1]], atol=1e-4)


class OneHouse:
    """A downstream user's scene source: two methods, no change to the tasks."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def scene_ids(self) -> list[str]:
        return ["my-house"]

    def load(self, scene_id: str) -> Scene:
        self.loaded.append(scene_id)
        return generate_scene(7)


def test_tasks_take_an_injected_scene_source() -> None:
    import embodied

    source = OneHouse()
    env = embodied.envs.make("objectnav", scenes=source, resolution=16)
    env.reset(seed=3)
    assert env.unwrapped.episode.scene_id == "my-house" and source.loaded == ["my-house"]
    assert env.unwrapped.scene == generate_scene(7)
    env.close()


def test_scene_directory_of_scene_files_and_scans(tmp_path) -> None:
    import embodied
    from embodied.envs.scenes import SceneDirectory, write_scene_files

    ids = write_scene_files([7, 100_003], tmp_path)
    assert SceneDirectory(tmp_path).scene_ids() == sorted(ids)
    assert SceneDirectory(tmp_path).load(ids[0]) == generate_scene(7)
    env = embodied.envs.make("vln", scenes_dir=str(tmp_path), resolution=16)
    env.reset(seed=0)
    assert env.unwrapped.episode.scene_id in ids
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.glb").write_bytes(b"")
    assert SceneDirectory(tmp_path).load("scans/a.glb") == str(tmp_path / "scans" / "a.glb")
    with pytest.raises(FileNotFoundError, match="not found under scenes_dir"):
        SceneDirectory(tmp_path).load("mp3d/x/x.glb")
    with pytest.raises(TypeError, match=r"real scans need backend\.name=habitat"):
        env.unwrapped.backend.load_scene(str(tmp_path / "scans" / "a.glb"))
    env.close()
