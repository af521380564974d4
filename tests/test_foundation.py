"""Registries, configs and console entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import embodied
from embodied.conf import register_configs
from embodied.registry import Registry, UnknownNameError

BIN = Path(sys.executable).parent


def test_unknown_names_list_the_valid_ones() -> None:
    for family in (embodied.envs, embodied.memory, embodied.policies):
        with pytest.raises(UnknownNameError, match="valid names"):
            family.make("nope")
    with pytest.raises(UnknownNameError) as err:
        embodied.policies.make("nope")
    assert "random" in str(err.value)


def test_unknown_option_names_the_accepted_ones() -> None:
    reg: Registry[object] = Registry("thing")

    @reg.register("box")
    def box(size: int = 1, colour: str = "red") -> dict:
        return {"size": size, "colour": colour}

    assert reg.make("box", size=3) == {"size": 3, "colour": "red"}
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['sise'\].*accepted options: \['colour', 'size'\]"):
        reg.make("box", sise=3)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("box")(lambda: None)


def test_import_is_lazy() -> None:
    code = "import sys, embodied; assert 'torch' not in sys.modules, 'import embodied pulled in torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_groups_compose_and_override() -> None:
    register_configs()
    with initialize_config_module(config_module="embodied.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["eval.episodes=50", "policy=expert", "env=vln", "env.split=val_unseen"])
    assert cfg.eval.episodes == 50
    assert cfg.policy.name == "expert"
    assert cfg.env.name == "vln" and cfg.env.split == "val_unseen"
    assert cfg.env.expert is True  # the expert policy switches its observation on


def test_typed_eval_config_rejects_typos() -> None:
    register_configs()
    with (
        initialize_config_module(config_module="embodied.conf", version_base="1.3"),
        pytest.raises(Exception, match="episods"),
    ):
        compose("evaluate", overrides=["eval.episods=5"])


def test_downstream_config_dir_via_searchpath(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "mytask.yaml").write_text("name: pointnav\nsplit: train\nmax_episode_steps: 7\n")
    register_configs()
    with initialize_config_module(config_module="embodied.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["env=mytask", f"hydra.searchpath=[file://{tmp_path}]"])
    assert cfg.env.max_episode_steps == 7


@pytest.mark.parametrize("app", ["eval", "collect", "train", "view"])
def test_entry_point_help_lists_groups(app: str) -> None:
    out = subprocess.run([BIN / f"embodied-{app}", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Configuration groups" in out
    for group in ("env", "policy"):
        assert f"\n{group}:" in out or f"{group}: " in out
