"""The kernel's own BokehJS: the scripts that draw the views its bokeh makes.

A bokeh document is drawn only by the BokehJS of the bokeh that made it, and
bokeh's minors come out after memprofile's releases. So nothing is shipped
per version: the HTML report inlines these files, and the panel asks the
kernel for them over the comm (render/panel.py's views carry the version).
Only bokeh, widgets and tables: no MathJax, no WebGL, no API bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bokeh is imported only when the views are drawn
    from bokeh.resources import Component

BOKEH_COMPONENTS: list[Component] = ["bokeh", "bokeh-widgets", "bokeh-tables"]


def bokehjs_files() -> list[Path]:
    """The minified BokehJS files of the kernel's bokeh, in load order (bokeh
    first: widgets and tables register into it). bokeh's own `Resources`
    finds them (also in a bokeh built from source); a model's external
    resources (URLs) are not BokehJS and are left out."""
    from bokeh.resources import Resources

    files = [Path(f) for f in Resources(mode="absolute", components=BOKEH_COMPONENTS).js_files]
    files = [f for f in files if f.is_file()]
    names = [f.name.split(".")[0] for f in files]
    missing = [c for c in BOKEH_COMPONENTS if c not in names]
    if missing:
        import bokeh

        raise FileNotFoundError(f"bokeh {bokeh.__version__} has no {', '.join(missing)} script in its static folder")
    return files


def bokehjs_scripts() -> list[str]:
    """bokehjs_files' text, in load order."""
    return [f.read_text(encoding="utf-8") for f in bokehjs_files()]
