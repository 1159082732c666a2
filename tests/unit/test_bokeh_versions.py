"""The panel's BokehJS must be the Python bokeh that makes the json_items."""

import json
import re
from pathlib import Path

import bokeh

ROOT = Path(__file__).resolve().parents[2]


def test_bokehjs_in_the_extension_is_the_python_bokeh():
    package = json.loads((ROOT / "package.json").read_text())
    pinned = package["dependencies"]["@bokeh/bokehjs"]
    loaded = re.search(r"BOKEH_VERSION = '([^']+)'", (ROOT / "labextension" / "bokeh.ts").read_text()).group(1)
    assert pinned == loaded == bokeh.__version__, (
        f"package.json pins @bokeh/bokehjs {pinned}, labextension/bokeh.ts loads {loaded}, Python has bokeh "
        f"{bokeh.__version__}: they must be the same version")
    built = ROOT / "pyext" / "memprofile" / "labextension" / "static" / f"bokeh-{bokeh.__version__}.min.js"
    if built.parent.exists():  # after a build: the files the panel loads are there
        assert built.exists() and f'version="{bokeh.__version__}"' in built.read_text()
