"""The panel draws with the BokehJS of the kernel's bokeh minor: every supported minor is shipped."""

import json
import re
from pathlib import Path

import bokeh

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "pyext" / "memprofile" / "labextension" / "static"


def shipped_versions() -> list[str]:
    listed = re.search(r"BOKEH_VERSIONS = \[([^\]]+)\]", (ROOT / "labextension" / "bokeh.ts").read_text()).group(1)
    return re.findall(r"'([^']+)'", listed)


def test_the_panel_ships_a_bokehjs_for_every_supported_bokeh_minor():
    # GIVEN the bokeh range memprofile declares (pyproject: bokeh>=3.4,<4) and the newest bokeh here
    shipped = shipped_versions()
    minors = [tuple(int(n) for n in v.split(".")[:2]) for v in shipped]
    newest = tuple(int(n) for n in bokeh.__version__.split(".")[:2])
    # THEN every minor from 3.4 on has its BokehJS, once, in order, up to the installed one at least
    assert minors == [(3, m) for m in range(4, 4 + len(minors))], shipped
    assert newest in minors, (bokeh.__version__, shipped)
    # AND package.json has an alias per version, which the build copies
    aliases = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    assert {k: v for k, v in aliases.items() if k.startswith("bokehjs-")} == {
        f"bokehjs-{v.rsplit('.', 1)[0]}": f"npm:@bokeh/bokehjs@{v}" for v in shipped}
    if STATIC.exists():  # after a build: the files the panel loads are there, each of its version
        for v in shipped:
            for name in ("bokeh", "bokeh-widgets", "bokeh-tables"):
                built = STATIC / f"{name}-{v}.min.js"
                assert built.exists(), built
            assert f'version="{v}"' in (STATIC / f"bokeh-{v}.min.js").read_text()


def test_the_kernels_bokeh_is_drawn_by_a_bokehjs_of_its_own_minor():
    # the development environment builds and tests with a bokeh whose BokehJS is shipped
    minor = bokeh.__version__.rsplit(".", 1)[0]
    assert any(v.rsplit(".", 1)[0] == minor for v in shipped_versions()), bokeh.__version__


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
