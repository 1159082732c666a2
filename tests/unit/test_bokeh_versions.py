"""The panel's BokehJS must be the Python bokeh that makes the json_items."""

import json
import re
from pathlib import Path

import bokeh
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bokehjs_in_the_extension_is_the_python_bokeh():
    package = json.loads((ROOT / "package.json").read_text())
    pinned = package["dependencies"]["@bokeh/bokehjs"]
    loaded = re.search(r"BOKEH_VERSION = '([^']+)'", (ROOT / "labextension" / "bokeh.ts").read_text()).group(1)
    assert pinned == loaded, f"package.json pins @bokeh/bokehjs {pinned}, labextension/bokeh.ts loads {loaded}"
    built = ROOT / "pyext" / "memprofile" / "labextension" / "static" / f"bokeh-{loaded}.min.js"
    if built.parent.exists():  # after a build: the files the panel loads are there
        assert built.exists() and f'version="{loaded}"' in built.read_text()
    if bokeh.__version__.split(".")[:2] != loaded.split(".")[:2]:
        # A user's other bokeh: the panel says its views are not drawn (panel.ts sameMinor).
        pytest.skip(f"Python bokeh {bokeh.__version__} is another minor than the panel's BokehJS {loaded}")
    # the development environment builds and tests with the same bokeh on both sides
    assert bokeh.__version__ == loaded, f"Python has bokeh {bokeh.__version__}, the panel loads {loaded}"


def test_the_panels_list_of_trusted_javascript_is_current():
    from memprofile.render.panel import TRUSTED_JS_PATH, trusted_js_text

    assert TRUSTED_JS_PATH.read_text() == trusted_js_text(), (
        "labextension/trusted_js.json is stale: run `python -m memprofile.render.panel --write`")


def test_every_javascript_in_the_views_is_trusted():
    # the views of a rich profile carry only the constants the panel knows
    from memprofile.render.interactive import TRUSTED_JS
    from memprofile.render.panel import view_items
    from tests.builders import make_rich_profile

    found = []

    def walk(value):
        if isinstance(value, dict):
            name = value.get("name", "")
            attributes = value.get("attributes", {})
            if isinstance(name, str) and name.startswith("CustomJS"):
                found.append(attributes.get("code"))
            if name == "HTMLTemplateFormatter":
                found.append(attributes.get("template"))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(view_items(make_rich_profile()))
    assert found and set(found) <= set(TRUSTED_JS)
