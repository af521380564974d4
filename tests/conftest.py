"""Test-wide settings.

- Headless rendering through EGL on Mesa unless the caller chose a backend.
- torch on one thread: the suite runs on 2 cores beside llvmpipe's render threads, and
  OpenMP's spinning threads are up to 100x slower when the cores are oversubscribed.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency, but keep collection robust
    pass
