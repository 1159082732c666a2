#!/usr/bin/env bash
# The compatibility matrix (not in CI: each row downloads a CUDA build of
# torch from PyPI, several GB). For each row: a fresh venv with that Python,
# torch, tensorflow-cpu, bokeh, JupyterLab and ipykernel (pinned, or the
# package index's newest), memprofile from this checkout (PYTHONPATH, no
# build), then the capture, import and real-kernel tests, and for the newest
# row the panel's browser tests. Writes one markdown row per line to $OUT (default
# artifacts/compat.md) and puts them into README's "Tested versions"
# (between its compat.sh markers): the whole table, or the rows that ran.
#
#   scripts/compat.sh                 # every row
#   scripts/compat.sh oldest newest   # some rows, by name
#   KEEP=1 scripts/compat.sh          # reuse the rows' venvs of an earlier run
#
# pip's machine-wide constraints (/etc/xdg/pip caps torch here) are not used:
# PIP_CONFIG_FILE=/dev/null, so every release on PyPI can be installed.
set -uo pipefail
SELECTED="$*"
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/artifacts/compat.md}
WORK=${WORK:-/tmp/memprofile-compat}
mkdir -p "$(dirname "$OUT")" "$WORK"

# name  python  torch  tensorflow-cpu  bokeh  jupyterlab  ipykernel  browser
# A version "-" is not pinned: the package index's newest, as a new user gets it today (the
# "newest" row; run it before each release). browser=ui: the row also runs the browser tests of
# the panel (tests/ui/test_panel.py, test_panel_bokeh_versions.py) with its own kernel, against
# this checkout's built extension (linked into the row's venv), with Debian's chromium.
ROWS=(
  "oldest 3.10 2.4.1 2.16.2 3.4.3 4.2.7 6.29.5 -"
  "torch2.6 3.12 2.6.0 2.21.0 3.9.2 4.6.6 7.1.0 -"
  "torch2.15 3.13 2.15.0 2.21.0 3.9.2 4.6.6 7.1.0 -"
  "newest 3.13 - - - - - ui"
)
# The tests a row runs: capture (torch, TF), imports of recorded traces, the
# renderers, and the real kernel; not the wheel build. torch's tests
# run in a process of their own: with torch 2.15 (CUDA build) and TF 2.21 in
# one process, loading triton after TensorFlow aborts the interpreter.
# The files outside tests/torch that train with torch in the test process go with torch's: an
# optimizer's step loads dynamo and triton, which abort after TensorFlow (torch 2.15, CUDA build).
TORCH_ELSEWHERE=(tests/imports/test_torch_trace.py tests/imports/test_live_walk_on_gpu_events.py
                 tests/unit/test_render.py tests/unit/test_render_steps.py tests/unit/test_report.py
                 tests/unit/test_widget.py tests/unit/test_wire.py tests/unit/test_merge.py
                 tests/unit/test_caller_namespace.py tests/unit/test_stairs.py tests/unit/test_quiet.py)
TESTS_TORCH=(tests/torch "${TORCH_ELSEWHERE[@]}")
TESTS_REST=(tests/tensorflow tests/imports tests/unit tests/integration --deselect tests/integration/test_wheel.py
            "${TORCH_ELSEWHERE[@]/#/--ignore=}")
TESTS_UI=(tests/ui/test_panel.py tests/ui/test_panel_bokeh_versions.py)

pin() {  # a requirement: "name==version", or the newest ("-")
  if [ "$2" = "-" ]; then echo "$1"; else echo "$1==$2"; fi
}

python_for() {  # the pyenv interpreter of a minor version
  ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -1
}

run_row() {
  local name=$1 py=$2 torch=$3 tf=$4 bokeh=$5 lab=$6 kernel=$7 browser=$8
  local venv=$WORK/$name log=$WORK/$name.log interpreter
  interpreter=$(python_for "$py")
  if [ -z "$interpreter" ]; then
    echo "| $name | Python $py, torch $torch, TF $tf, bokeh $bokeh, JupyterLab $lab | not run: no Python $py here |" >>"$OUT"
    return
  fi
  echo "==> $name: Python $py, torch $torch, tensorflow-cpu $tf, bokeh $bokeh, jupyterlab $lab"
  export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
  if [ -n "${KEEP:-}" ] && [ -x "$venv/bin/python" ]; then  # KEEP=1: reuse a row's venv from an earlier run
    : >"$log"
  elif ! { rm -rf "$venv" && "$interpreter" -m venv "$venv"; } || ! "$venv/bin/pip" install -q "$(pin torch "$torch")" "$(pin tensorflow-cpu "$tf")" "$(pin bokeh "$bokeh")" "$(pin jupyterlab "$lab")" \
      "$(pin ipykernel "$kernel")" "psutil>=6,<8" "ipython>=8.20" "comm>=0.2,<0.3" "ipywidgets>=8.1,<9" \
      "nbclient>=0.10,<0.12" "nbformat>=5.10,<6" "pytest>=8,<10" "hypothesis>=6.100,<7" "jsonschema>=4.20,<5" \
      >"$log" 2>&1; then
    echo "| $name | Python $py, torch $torch, TF $tf, bokeh $bokeh, JupyterLab $lab | install failed: $(tail -1 "$log" | cut -c1-160) |" >>"$OUT"
    return
  fi
  local versions
  versions=$("$venv/bin/python" -c "import sys, torch, tensorflow as tf, bokeh, jupyterlab, keras; \
print(f'{sys.version.split()[0]} / torch {torch.__version__} / TF {tf.__version__} (Keras {keras.__version__}) / \
bokeh {bokeh.__version__} / JupyterLab {jupyterlab.__version__}')" 2>>"$log")
  local result="" status=0 part parts=(TESTS_TORCH TESTS_REST)
  if [ "$browser" = "ui" ]; then
    # the built extension, as `jupyter labextension develop` links it; playwright drives Debian's chromium
    if [ -f "$ROOT/pyext/memprofile/labextension/package.json" ] \
        && "$venv/bin/pip" install -q "playwright>=1.50,<2" >>"$log" 2>&1; then
      mkdir -p "$venv/share/jupyter/labextensions"
      ln -sfn "$ROOT/pyext/memprofile/labextension" "$venv/share/jupyter/labextensions/memprofile"
      parts+=(TESTS_UI)
    else
      result+="browser tests not run (build the extension first: scripts/setup.sh) ; "
    fi
  fi
  for part in "${parts[@]}"; do
    local -n tests=$part
    local from summary
    from=$(($(wc -l <"$log") + 1))
    PYTHONPATH=$ROOT/pyext:$ROOT "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" >>"$log" 2>&1 \
      || status=1
    # this part's summary only: a process that aborted has none
    summary=$(tail -n +"$from" "$log" | grep -E '^=*\s*[0-9]+ (failed|passed)' | tail -1 | tr -d '=')
    result+="${summary:-the process aborted: $(tail -n +"$from" "$log" | grep -m1 -E '^Fatal Python error' || echo 'no summary')} ; "
  done
  if [ $status -eq 0 ]; then
    result="passed: $result"
  else
    result="FAILED: $(grep -E '^(FAILED|ERROR) ' "$log" | head -8 | sed 's/ - .*//' | tr '\n' ' ')$result"
  fi
  echo "| $name | $versions | $result |" >>"$OUT"
  echo "    $result (log: $log)"
}

echo "| row | versions | tests: torch's process ; the rest (capture, import, renderers, real kernels) ; the browser (newest) |" >"$OUT"
echo "|---|---|---|" >>"$OUT"
for row in "${ROWS[@]}"; do
  # shellcheck disable=SC2086
  set -- $row
  if [ $# -gt 0 ] && { [ -z "${SELECTED:-}" ] || [[ " $SELECTED " == *" $1 "* ]]; }; then
    run_row "$@"
  fi
done
echo "==> $OUT"

# README's table (between its markers): every row's line from $OUT; on a run
# of some rows, only those rows' lines (by name), the others as they were.
BEGIN="<!-- compat.sh: table -->" END="<!-- compat.sh: end -->"
if grep -qF "$BEGIN" README.md && grep -qF "$END" README.md; then
  awk -v begin="$BEGIN" -v end="$END" -v table="$OUT" -v full="$([ -z "${SELECTED:-}" ] && echo 1)" '
    function name_of(line,  f) { split(line, f, "|"); gsub(/^ +| +$/, "", f[2]); return f[2] }
    BEGIN { while ((getline line < table) > 0) { rows[++n] = line; if (n > 2) by_name[name_of(line)] = line } }
    $0 == begin { print; inside = 1; if (full) for (i = 1; i <= n; i++) print rows[i]; next }
    $0 == end { inside = 0 }
    inside && full { next }
    inside && (name_of($0) in by_name) { print by_name[name_of($0)]; next }
    { print }' README.md >README.md.compat && mv README.md.compat README.md
  echo "==> README.md (Tested versions)"
fi
