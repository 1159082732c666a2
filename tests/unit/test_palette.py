"""One colour per kind of memory on the card (CSS), the panel and the report
(bokeh and static HTML): render/palette.py CATEGORY_COLORS."""

from __future__ import annotations

import re
from pathlib import Path

from memprofile.model.profile import CATEGORIES
from memprofile.render import html
from memprofile.render.palette import CATEGORY_COLORS

CSS = Path(__file__).resolve().parents[2] / "labextension" / "style" / "base.css"


def test_the_card_draws_each_kind_in_the_panels_and_reports_colour():
    declared = dict(re.findall(r"--jp-memprofile-cat-([a-z-]+):\s*(#[0-9a-fA-F]{6});", CSS.read_text()))
    for kind in CATEGORIES:
        assert declared.get(kind.replace("_", "-"), "").lower() == CATEGORY_COLORS[kind].lower(), kind


def test_every_colour_the_python_renderers_use_is_the_palettes():
    """No colour is written outside render/palette.py: a second copy drifts."""
    import re
    from pathlib import Path

    import memprofile.jupyter
    import memprofile.render

    colour = re.compile(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b")
    found = {}
    for package in (memprofile.render, memprofile.jupyter):
        for path in Path(package.__path__[0]).glob("*.py"):
            if path.name != "palette.py" and colour.findall(path.read_text()):
                found[path.name] = colour.findall(path.read_text())
    assert not found
    assert html.CATEGORY_COLORS is CATEGORY_COLORS  # the static HTML's bars are the palette's
