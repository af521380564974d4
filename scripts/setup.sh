#!/usr/bin/env bash
# One-time (and idempotent) setup: Debian packages, .venv, torch first, then the package.
# A second run with nothing changed only checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libopengl0 libosmesa6 libusb-1.0-0"
TORCH="torch==2.13.0"
EXTRAS=${EMBODIED_EXTRAS:-test,bench,libero,eval,view}

die() { echo "setup: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python >= 3.10"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "Python >= 3.10 is needed, $("$PYTHON" --version) found (set PYTHON=/path/to/python3.11)"

# --- Debian packages: headless OpenGL (EGL/OSMesa on Mesa) and libusb for open3d ---------
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  missing="$missing python3-venv"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    die "missing system packages:$missing
run as root:  apt-get install -y$missing
then run make again"
  fi
fi

# --- Python environment -----------------------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.embodied-installed"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)-$EXTRAS
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "setup: installing $TORCH (CPU wheel), then embodied[$EXTRAS] with torch pinned"
"${pip[@]}" "$TORCH"
"${pip[@]}" -c constraints.txt -e ".[$EXTRAS]"
echo "$want" > "$stamp"
echo "setup: done"
