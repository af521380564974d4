"""The simulator side of navigation: plain types, the backend protocol, the scene
description, the MuJoCo and habitat-sim backends, and the out-of-process client.

Everything here uses only relative imports, Python 3.9 syntax and no Gymnasium, so a bare
simulator interpreter (a conda env with habitat-sim) can host it through `envs/worker.py`.
"""
