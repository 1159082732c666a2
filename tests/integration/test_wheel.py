"""The wheel, built from the repository, carries the prebuilt extension.

GIVEN the tracked sources copied to a scratch directory (so the build starts
from what a clean clone has), WHEN the wheel is built and installed into a fresh
virtual environment whose PATH has no Node.js, THEN `jupyter labextension list`
shows memprofile enabled and OK. The sizes are written to artifacts/sizes.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.package
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in out.stdout.split("\0") if f and (ROOT / f).is_file()]


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("clean-clone")
    for rel in _tracked_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    assert not (src / "pyext/memprofile/labextension").exists()
    dist = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build tools pinned in .venv (setup.sh) do the build;
    # the jupyter-builder hook runs `jlpm install` and `jlpm build:prod` here.
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=src,
        check=True,
        capture_output=True,
        text=True,
    )
    (whl,) = dist.glob("memprofile-*.whl")
    ARTIFACTS.mkdir(exist_ok=True)
    sizes = {
        "wheel_bytes": whl.stat().st_size,
        "labextension_bytes": _du(src / "pyext/memprofile/labextension"),
        "labextension_static_bytes": _du(src / "pyext/memprofile/labextension/static"),
    }
    (ARTIFACTS / "sizes.json").write_text(json.dumps(sizes, indent=2) + "\n")
    return whl


def test_wheel_contains_the_prebuilt_extension(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    prefix = "memprofile-0.1.0.data/data/share/jupyter/labextensions/memprofile/"
    assert prefix + "package.json" in names
    assert prefix + "install.json" in names
    assert any(n.startswith(prefix + "static/") and n.endswith(".js") for n in names)
    # no BokehJS of its own (the panel draws with the kernel's); the settings schema ships too
    assert not [n for n in names if n.startswith(prefix) and "bokeh" in n.rsplit("/", 1)[-1]]
    assert prefix + "schemas/memprofile/panel.json" in names
    assert "memprofile/model/profile.schema.json" in names
    assert not [n for n in names if "node_modules" in n or n.endswith(".ts")]


def test_fresh_venv_without_node_lists_the_extension_enabled(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    # Only the venv on PATH: no node, no jlpm, nothing from the dev environment.
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", str(tmp_path)), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    assert shutil.which("node", path=env["PATH"]) is None
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(wheel), "jupyterlab>=4.6,<4.7"], check=True, env=env, capture_output=True, text=True)
    listed = subprocess.run(
        [str(bin_dir / "jupyter"), "labextension", "list"], env=env, capture_output=True, text=True, check=True
    )
    text = listed.stdout + listed.stderr
    assert str(venv) in text  # it looked in the fresh environment
    line = next(line for line in text.splitlines() if "memprofile" in line)
    assert "enabled" in line and "OK" in line and "0.1.0" in line, text
    # the Python side is there too, with no framework installed
    out = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import memprofile, sys; print(memprofile.__version__, 'torch' in sys.modules)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["0.1.0", "False"]


# Installing memprofile must never move these: the user's own training environment.
USERS_PACKAGES = {
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "bokeh",
    "jupyterlab",
    "notebook",
    "ipywidgets",
    "ipykernel",
}


def test_installing_the_wheel_changes_none_of_the_users_frameworks(wheel):
    # GIVEN this environment: torch, tensorflow-cpu, keras, bokeh, JupyterLab, Notebook 7, ipywidgets, ipykernel
    # WHEN pip resolves memprofile with its torch and notebook extras into it
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            "-",
            "--disable-pip-version-check",
            f"memprofile[torch,notebook] @ {wheel.resolve().as_uri()}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    planned = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.stdout)["install"]}
    # THEN it would install memprofile and touch none of them
    assert "memprofile" in planned
    assert not USERS_PACKAGES & set(planned), planned
