"""Procedural houses and where scenes come from.

    scene = generate_scene(seed)                 # deterministic for a seed
    seeds = split_scene_seeds("val_unseen", 10)  # disjoint seed ranges per split
    Scene.from_json(scene.to_json()) == scene
    SceneDirectory("data/scenes").load("house_7.json")

The scene description itself (`Scene`, `CATEGORIES`, ...) lives in `embodied.envs.sim.scene`,
beside the backends that consume it; it is handed on here for convenience.
"""

from embodied.envs.scenes.generator import SPLIT_SEEDS, generate_scene, split_scene_seeds
from embodied.envs.scenes.sources import (
    ProceduralScenes,
    SceneDirectory,
    SceneSource,
    procedural_scene,
    write_scene_files,
)
from embodied.envs.sim.scene import (
    CATEGORIES,
    COLOURS,
    FURNITURE,
    SMALL,
    Box,
    Door,
    Room,
    Scene,
    SceneObject,
    category_id,
)

__all__ = [
    "CATEGORIES", "COLOURS", "FURNITURE", "SMALL", "SPLIT_SEEDS", "Box", "Door", "ProceduralScenes", "Room", "Scene",
    "SceneDirectory", "SceneObject", "SceneSource", "category_id", "generate_scene", "procedural_scene",
    "split_scene_seeds", "write_scene_files",
]
