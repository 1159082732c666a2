#!/usr/bin/env bash
# Install everything, then run every test: ruff and mypy (Python lint and
# types), TypeScript (eslint, jest), Python unit tests, a real kernel
# (nbclient), the wheel in a fresh venv, and the browser test against a real
# JupyterLab in Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
start=$(date +%s)
echo "==> ruff + mypy"
ruff check .
mypy
echo "==> eslint + jest"
jlpm eslint:check
jlpm test
echo "==> pytest (unit, integration, ui)"
python -m pytest -ra "$@"
echo "==> all tests passed in $(( $(date +%s) - start )) s (setup excluded)"
