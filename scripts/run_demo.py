"""Execute a demo notebook with a real kernel and write its HTML report.

The notebook's last cell exports its newest profile with `%memprofile export`;
this script checks the report exists and prints where everything is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(path: str) -> int:
    notebook_path = Path(path).resolve()
    nb = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebook_path.parent)}}
    )
    print(f"==> executing {notebook_path.name} with a real kernel")
    client.execute()
    executed = notebook_path.with_suffix(".executed.ipynb")
    nbformat.write(nb, executed)
    report = notebook_path.with_name(notebook_path.stem + "_report.html")
    if not report.is_file():
        print(f"the notebook did not write {report}", file=sys.stderr)
        return 1
    root = Path.cwd()
    print(f"==> executed notebook: {executed.relative_to(root)}")
    print(f"==> HTML report:       {report.relative_to(root)}  (open it in any browser; it works offline)")
    print("==> open the notebook in JupyterLab with the extension:")
    print(f"      .venv/bin/jupyter lab {notebook_path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "demo_notebooks/quickstart.ipynb"))
