"""The panel and the report draw with the kernel's own BokehJS (render/bokehjs.py); nothing per
version is shipped, so a bokeh minor released after memprofile draws too."""

import json
from pathlib import Path

import bokeh

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "pyext" / "memprofile" / "labextension" / "static"


def test_the_kernels_bokehjs_is_its_bokehs_own_files_in_load_order():
    from memprofile.render.bokehjs import bokehjs_files, bokehjs_scripts

    # GIVEN the bokeh of this environment
    files = bokehjs_files()
    # THEN its BokehJS is bokeh, widgets and tables, from bokeh's own package, minified
    assert [f.name for f in files] == ["bokeh.min.js", "bokeh-widgets.min.js", "bokeh-tables.min.js"]
    assert all(Path(bokeh.__file__).parent in f.parents for f in files)
    core, widgets, tables = bokehjs_scripts()
    # AND the core registers as the kernel's version; the plugins register into it
    assert f'version="{bokeh.__version__}"' in core
    assert "register_plugin" in widgets and "register_plugin" in tables


def test_the_report_inlines_the_same_bokehjs_the_panel_loads():
    from memprofile.render.bokehjs import bokehjs_scripts
    from memprofile.render.report import render_report
    from tests.builders import make_rich_profile

    page = render_report(make_rich_profile())
    for script in bokehjs_scripts():  # the report escapes URLs' slashes: compare a stretch without any
        assert script[len(script) // 2 : len(script) // 2 + 2000].replace("://", ":\\/\\/") in page


def test_the_extension_ships_no_bokehjs_of_its_own():
    # package.json has no BokehJS package and the build copies none: the kernel's is the one drawn
    package = json.loads((ROOT / "package.json").read_text())
    assert not [name for name in {**package["dependencies"], **package["devDependencies"]} if "bokeh" in name]
    if STATIC.exists():
        assert not list(STATIC.glob("bokeh*.js"))


def test_the_panels_list_of_trusted_javascript_is_current():
    from memprofile.render.panel import TRUSTED_JS_PATH, trusted_js_text

    assert TRUSTED_JS_PATH.read_text() == trusted_js_text(), (
        "labextension/trusted_js.json is stale: run `python -m memprofile.render.panel --write`"
    )


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
