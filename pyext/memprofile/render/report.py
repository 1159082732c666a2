"""The standalone HTML report: one file that works offline.

The static summary (render/html.py) on top, the interactive bokeh views
(render/interactive.py) below, BokehJS inline (bokeh, widgets and tables
only: no MathJax, no WebGL). The page makes no request to any network:
BokehJS carries a few URL strings for features not used here (MathJax, Google
Maps, links in licence comments); they are written with escaped slashes
(`https:\\/\\/`), which JavaScript reads the same, so the file contains no
URL at all. Light and dark: the page follows the reader's colour scheme; the
plots sit on light cards, readable in both.
"""

from __future__ import annotations

import re
from pathlib import Path

from memprofile.files import write_atomic
from memprofile.model.profile import Profile
from memprofile.render.bokehjs import BOKEH_COMPONENTS
from memprofile.render.html import render_static_report, report_page
from memprofile.render.palette import PAGE_BACKGROUND, PAGE_TEXT, VIEWS_CODE_BACKGROUND, VIEWS_EDGE_DARK
from memprofile.storage import Url

_URL = re.compile(r"\b(https?|wss?|ftp):\/\/", re.IGNORECASE)

#: The views' card (the page itself is styled by render/html.py).
_VIEWS_STYLE = f"""
.mp-views{{margin-top:18px;background:{PAGE_BACKGROUND};color:{PAGE_TEXT};border-radius:6px;padding:10px}}
.mp-views .mp-muted{{opacity:.72}}
.mp-views pre{{padding:6px;overflow-x:auto;background:{VIEWS_CODE_BACKGROUND};border-radius:3px}}
@media (prefers-color-scheme: dark){{.mp-views{{box-shadow:0 0 0 1px {VIEWS_EDGE_DARK}}}}}
"""


def _no_urls(text: str) -> str:
    return _URL.sub(lambda m: m.group(1) + ":\\/\\/", text)


def render_report(profile: Profile) -> str:
    """A complete, self-contained HTML document with the interactive views
    (the static one where bokeh is not installed)."""
    try:
        from bokeh.embed import components
        from bokeh.resources import Resources
    except ImportError:
        return render_static_report(profile)

    from memprofile.render.interactive import views

    script, div = components(views(profile))
    resources = Resources(mode="inline", components=BOKEH_COMPONENTS)
    head = f"<style>{_VIEWS_STYLE}</style>{_no_urls(resources.render_css())}{_no_urls(resources.render_js())}"
    # the views' Ranks tab has the ranks' tables: the summary above keeps their headline
    return report_page(
        profile, head=head, body=f"<div class='mp-views'>{div}</div>{_no_urls(script)}", ranks_in_full=False
    )


def write_report(profile: Profile, path: str | Path | Url) -> Path | Url:
    """Write the report all or nothing (files.write_atomic): a full disk
    leaves no truncated page, and an older report as it was."""
    return write_atomic(path, render_report(profile))
