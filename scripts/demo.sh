#!/usr/bin/env bash
# Install everything, execute the demo notebook and write its HTML report,
# then say how to open it in JupyterLab with the extension.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python scripts/run_demo.py demo_notebooks/quickstart.ipynb
