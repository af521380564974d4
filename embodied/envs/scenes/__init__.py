"""Procedural houses: generation, plain-data description, exporters.

    scene = generate_scene(seed)                 # deterministic for a seed
    seeds = split_scene_seeds("val_unseen", 10)  # disjoint seed ranges per split
    Scene.from_json(scene.to_json()) == scene
"""

from embodied.envs.scenes.export import export_glb, scene_meshes, to_mjspec
from embodied.envs.scenes.generator import SPLIT_SEEDS, generate_scene, split_scene_seeds
from embodied.envs.scenes.types import (
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
    "CATEGORIES", "COLOURS", "FURNITURE", "SMALL", "SPLIT_SEEDS", "Box", "Door", "Room", "Scene", "SceneObject",
    "category_id", "export_glb", "generate_scene", "scene_meshes", "split_scene_seeds", "to_mjspec",
]
