#!/usr/bin/env bash
# Install everything memprofile needs into ./.venv: Debian's chromium (for the
# browser tests), PyTorch (CPU build), tensorflow-cpu, JupyterLab and the test
# tools, the JS dependencies (jlpm), and memprofile itself (editable) with its
# JupyterLab extension built and linked. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian's chromium (browser tests)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "==> installing Python dependencies into .venv"
python -m pip install -q --upgrade "pip>=24"
# torch first, pinned: 2.13.0 is the CPU build on this machine's disk (an
# unpinned "torch" would pull a multi-GB CUDA build).
python -m pip install -q "torch==2.13.0"
# Build tools first, so the editable install below can build without isolation.
python -m pip install -q "hatchling>=1.21,<2" "hatch-jupyter-builder>=0.9,<0.11" \
  "hatch-nodejs-version>=0.3.2,<0.5" "editables>=0.5,<1" "jupyterlab>=4.6,<4.7"

echo "==> installing memprofile (editable) and building its JupyterLab extension"
# On a second run the venv's labextensions/memprofile is the symlink `labextension develop` made
# to the built extension: pip would write the wheel's install.json through it into
# pyext/memprofile/labextension, and the next editable build then fails on a second install.json.
if [ -L .venv/share/jupyter/labextensions/memprofile ]; then
  rm .venv/share/jupyter/labextensions/memprofile
fi
rm -f pyext/memprofile/labextension/install.json
python -m pip install -q --no-build-isolation -e ".[test,torch]" "tensorflow-cpu>=2.21,<2.22"
jupyter labextension develop --overwrite . >/dev/null
jupyter labextension list 2>&1 | grep -q "memprofile.*enabled.*OK" \
  || { jupyter labextension list; echo "memprofile extension is not enabled" >&2; exit 1; }
echo "==> setup done"
