"""Every colour the Python renderers draw with, in one place.

One hue per kind of memory, the same in the bokeh views, the static HTML and
the card (labextension/style/base.css declares them again as CSS variables:
tests/unit/test_palette.py holds the two equal). The other colours mark what
a view adds to the memory it draws: the peak, the device's capacity, phases,
steps, and what was not recorded in detail.
"""

from __future__ import annotations

#: One hue per kind of memory (model.profile CATEGORIES).
CATEGORY_COLORS = {
    "parameter": "#4c78a8",
    "gradient": "#f58518",
    "optimizer_state": "#b279a2",
    "activation": "#e45756",
    "temporary": "#72b7b2",
    "input": "#54a24b",
    "other": "#9d9d9d",
}
#: The static HTML's sparkline: live bytes in the parameters' hue, its peak in the activations'.
SPARKLINE = CATEGORY_COLORS["parameter"]
SPARKLINE_PEAK = CATEGORY_COLORS["activation"]
#: A kind the palette does not know (a newer profile's), in the peak's bars.
UNKNOWN_CATEGORY = "#999"

#: A series of its own: a timeline without kinds, the peak's bars by layer.
SERIES = "#1f77b4"
#: The live-bytes line drawn over the stacked kinds.
TOTAL_LINE = "#333333"
#: The peak (its point and mark), the device's capacity, the highest rank.
PEAK = "#d62728"
#: The headroom line below the capacity (85 %).
HEADROOM = "#ff7f0e"
#: What failed: a trial that raised (the static HTML's error mark is the same hue).
ERROR = "#d62728"

#: Phases shaded behind the timeline (forward is left plain).
PHASE_SHADES = {"backward": "#f5b041", "optimizer": "#a569bd"}
#: Steps recorded in detail, and steps measured by their boundaries only.
STEP_DETAILED = "#111111"
STEP_BOUNDARY = "#0b7a75"
#: The fill of a hollow marker.
HOLLOW = "#ffffff"
#: Where the allocator was not recorded in detail (before or after the detail window).
UNRECORDED_SHADE = "#8c8c8c"
#: A label's text on a plot, and the light box behind it.
LABEL_TEXT = "#555555"
LABEL_BACKGROUND = "#ffffff"

#: The ranks' timelines: the ranks other than the highest, and each full timeline kept, in turn.
OTHER_RANKS = "#7f7f7f"
RANK_SERIES = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

#: The standalone page: light, and dark where the reader's system asks for it.
PAGE_BACKGROUND = "#fff"
PAGE_TEXT = "#1f1f1f"
PAGE_BACKGROUND_DARK = "#111418"
PAGE_TEXT_DARK = "#e6e6e6"
#: The report's views sit on a light card whatever the page (bokeh draws for light backgrounds).
VIEWS_CODE_BACKGROUND = "#f2f2f2"
VIEWS_EDGE_DARK = "#333"
#: The caveat next to a headline (Profile.peak_scope).
CAVEAT = "#e0a800"
