# Two commands do everything on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

test: setup lint
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) benchmarks/nav_env.py

clean:
	rm -rf .venv outputs .pytest_cache
