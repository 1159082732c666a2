#!/usr/bin/env bash
# Install everything, then run every test: ruff and mypy (Python lint,
# format and types), TypeScript (eslint, prettier, jest), Python unit tests, a real kernel
# (nbclient), the wheel in a fresh venv, and the browser test against a real
# JupyterLab in Debian's chromium.
#
#   ./scripts/test.sh          every tier (CI runs exactly this)
#   ./scripts/test.sh --fast   the edit-test loop: lint, jest and the tests
#                              not marked `slow` (tests/unit and tests/imports
#                              but their subprocesses and real budgets), with
#                              hypothesis's `dev` profile, on the .venv already
#                              set up
# Tiers are pytest marks (pyproject.toml): slow, kernel, ui, package, serial;
# `.venv/bin/python -m pytest -m ui` runs the browser tier alone.
# pytest-xdist runs the tests on MEMPROFILE_TEST_WORKERS workers (default 2:
# one per core; the full run is CPU-bound, README "Develop"); the browser
# tests share one worker's JupyterLab and Chromium; the tests marked `serial`
# (timing, the process's own memory) run after, one at a time. Other
# arguments go to pytest.
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
ruff format --check .
mypy
echo "==> eslint + prettier + jest"
jlpm eslint:check
jlpm prettier:check
jlpm test
workers="${MEMPROFILE_TEST_WORKERS:-2}"
# pytest, where "no test selected" (exit 5: a path given with no serial test in it) is no failure.
tests() {
  local rc=0
  python -m pytest "$@" || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then
    exit "$rc"
  fi
}
if [ "$fast" = 1 ]; then
  echo "==> pytest (fast tier: not slow)"
  HYPOTHESIS_PROFILE=dev tests -ra -m "not slow and not serial" -n "$workers" "$@"
  HYPOTHESIS_PROFILE=dev tests -ra -m "not slow and serial" "$@"
  echo "==> the fast tier passed in $(( $(date +%s) - start )) s"
  exit 0
fi
echo "==> pytest (every tier: fast, slow, kernel, ui, package)"
tests -ra -m "not serial" -n "$workers" --dist loadgroup --durations=30 "$@"
echo "==> pytest (the serial tests: timing and the process's own memory, on quiet cores)"
tests -ra -m serial "$@"
echo "==> all tests passed in $(( $(date +%s) - start )) s (setup excluded)"
