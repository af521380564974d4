"""Scene sources: where the houses of a task come from, injected into the env.

A source answers two questions: which scenes a task may sample episodes in
(`scene_ids()`), and what a backend loads for a scene id (`load(id)`): a `Scene` (a
procedural house, or a scene file written by the generator) or the path of a real scan
(habitat-sim only). Scene ids are what episode files carry in `scene_id`.

    ProceduralScenes("val_unseen")          # ids "procedural:<seed>", houses generated on demand
    SceneDirectory("data/scenes")           # "<id>.json" scene files, real scans, and procedural ids

A downstream user adds scenes by writing their own source (two methods) and passing it as
`embodied.envs.make("pointnav", scenes=MySource())`; the tasks do not change.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from embodied.envs.scenes.generator import generate_scene, split_scene_seeds
from embodied.envs.sim.scene import Scene

PROCEDURAL = "procedural:"
SCENE_SUFFIX = ".json"


@runtime_checkable
class SceneSource(Protocol):
    def scene_ids(self) -> list[str]:
        """The scenes episodes may be sampled in (procedural or scene files)."""

    def load(self, scene_id: str) -> Scene | str:
        """A `Scene`, or the path of a real scan for a backend that loads scans."""


def procedural_id(seed: int) -> str:
    return f"{PROCEDURAL}{seed}"


@lru_cache(maxsize=32)
def procedural_scene(seed: int) -> Scene:
    """The generated house of a seed, cached: generation costs tens of milliseconds."""
    return generate_scene(seed)


def _load_procedural(scene_id: str) -> Scene:
    try:
        seed = int(scene_id[len(PROCEDURAL):])
    except ValueError:
        raise ValueError(f"scene id '{scene_id}' must be 'procedural:<integer seed>'") from None
    return procedural_scene(seed)


class ProceduralScenes:
    """The generator's houses of a split (its first `num_scenes` seeds, or all)."""

    def __init__(self, split: str = "val_unseen", num_scenes: int | None = None) -> None:
        self.seeds = split_scene_seeds(split, num_scenes)
        self._ids = [procedural_id(s) for s in self.seeds]

    def scene_ids(self) -> list[str]:
        return self._ids

    def load(self, scene_id: str) -> Scene | str:
        if not scene_id.startswith(PROCEDURAL):
            raise ValueError(f"scene '{scene_id}' is not a procedural house; set scenes_dir= to the folder "
                             "that holds it")
        return _load_procedural(scene_id)


class SceneDirectory:
    """Scenes under one folder, by their path relative to it: `*.json` files written by
    `write_scene_files` (or `Scene.save`) load as `Scene`s; anything else (a `.glb` scan,
    `mp3d/<scan>/<scan>.glb` as R2R-CE names it) is handed to the backend as a path.
    `procedural:<seed>` ids still generate their house."""

    def __init__(self, root: str | Path, cache_size: int = 16) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"scenes_dir '{self.root}' is not a folder")
        self._cache: OrderedDict[str, Scene] = OrderedDict()
        self._cache_size = cache_size

    def scene_ids(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob(f"*{SCENE_SUFFIX}"))

    def load(self, scene_id: str) -> Scene | str:
        if scene_id.startswith(PROCEDURAL):
            return _load_procedural(scene_id)
        path = self.root / scene_id
        if not path.exists():
            raise FileNotFoundError(f"scene '{scene_id}' not found under scenes_dir '{self.root}' ({path})")
        if path.suffix != SCENE_SUFFIX:
            return str(path)
        if scene_id not in self._cache:
            self._cache[scene_id] = Scene.load(str(path))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._cache[scene_id]


def write_scene_files(seeds: list[int], directory: str | Path) -> list[str]:
    """Write `house_<seed>.json` for each seed into `directory`; returns their scene ids."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = []
    for seed in seeds:
        name = f"house_{seed}{SCENE_SUFFIX}"
        procedural_scene(seed).save(str(directory / name))
        ids.append(name)
    return ids
