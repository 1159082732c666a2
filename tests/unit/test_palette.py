"""One colour per kind of memory on the card (CSS), the panel and the report
(bokeh and static HTML, render/html.py CATEGORY_COLORS)."""

from __future__ import annotations

import re
from pathlib import Path

from memprofile.model.profile import CATEGORIES
from memprofile.render.html import CATEGORY_COLORS

CSS = Path(__file__).resolve().parents[2] / "labextension" / "style" / "base.css"


def test_the_card_draws_each_kind_in_the_panels_and_reports_colour():
    declared = dict(re.findall(r"--jp-memprofile-cat-([a-z-]+):\s*(#[0-9a-fA-F]{6});", CSS.read_text()))
    for kind in CATEGORIES:
        assert declared.get(kind.replace("_", "-"), "").lower() == CATEGORY_COLORS[kind].lower(), kind
