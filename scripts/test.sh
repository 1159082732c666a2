#!/usr/bin/env bash
# Install everything, then run every test: ruff and mypy (Python lint and
# types), TypeScript (eslint, jest), Python unit tests, a real kernel
# (nbclient), the wheel in a fresh venv, and the browser test against a real
# JupyterLab in Debian's chromium.
#
#   ./scripts/test.sh          every tier (CI runs exactly this)
#   ./scripts/test.sh --fast   the edit-test loop: lint, jest and tests/unit
#                              without its `slow` tests (subprocesses, real
#                              budgets), on the .venv already set up
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
if [ "$fast" = 0 ] || [ ! -x .venv/bin/python ]; then
  ./scripts/setup.sh
fi
# shellcheck disable=SC1091
. .venv/bin/activate
start=$(date +%s)
echo "==> ruff + mypy"
ruff check .
mypy
echo "==> eslint + jest"
jlpm eslint:check
jlpm test
if [ "$fast" = 1 ]; then
  echo "==> pytest (fast tier: tests/unit, not slow)"
  python -m pytest -ra -m "not slow" tests/unit "$@"
  echo "==> the fast tier passed in $(( $(date +%s) - start )) s"
  exit 0
fi
echo "==> pytest (unit, integration, ui)"
python -m pytest -ra "$@"
echo "==> all tests passed in $(( $(date +%s) - start )) s (setup excluded)"
