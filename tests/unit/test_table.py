"""render/table.py: every table the renderers build escapes each cell once,
its headers, caption and attributes too; user-named things (layers, ops,
kinds, devices, dtypes, source lines) come out as the text they are."""

from __future__ import annotations

from html.parser import HTMLParser

import memprofile
from memprofile.model.profile import Device
from memprofile.render.compare import render_compare_html
from memprofile.render.html import render_fragment, render_static_report
from memprofile.render.table import Column, Html, Row, html_table
from tests.builders import make_lined_profile, make_rich_profile

# Markup, both quotes, a bare ampersand and an entity: escaped once, each reads back as itself.
HOSTILE = "<img src=x onerror=alert(1)> \"q\" 'q' & &amp;"


class _Tables(HTMLParser):
    """The tags and attribute names of a page, and the text of each table cell (th, td, caption)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []
        self.cells: list[str] = []
        self._open = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.extend(attrs)
        if tag in ("td", "th", "caption"):
            self.cells.append("")
            self._open += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th", "caption"):
            self._open -= 1

    def handle_data(self, data):
        if self._open:
            self.cells[-1] += data


def _shown_as_text(html: str, *expected: str) -> list[str]:
    page = _Tables(html)
    assert "img" not in page.tags and "onerror" not in {name for name, _ in page.attributes}
    for text in expected:
        assert text in page.cells, f"no cell reads {text!r}"
    return page.cells


def test_the_helper_escapes_headers_caption_cells_and_attributes_but_not_markup_it_is_given():
    html = html_table(
        [HOSTILE, Column("styled", "text-align:right", "opacity:.5")],
        [[HOSTILE, Html("<b>bold</b>")], Row([HOSTILE, ""], {"data-line": HOSTILE})],
        caption=HOSTILE,
        attrs={"class": "mp-x"},
        more=1234,
    )
    cells = _shown_as_text(html, HOSTILE, "bold", "styled")
    assert cells.count(HOSTILE) == 4  # header, caption, two cells
    assert "<b>bold</b>" in html and "<th style='text-align:right'>styled</th>" in html
    assert "<td style='opacity:.5'>" in html and "<table class='mp-x'>" in html
    assert ("data-line", HOSTILE) in _Tables(html).attributes  # the value escaped inside its quotes
    assert "and 1,234 more" in html


def test_the_widget_tables_show_layer_op_kind_and_device_names_as_text():
    from memprofile.jupyter.widget import layers_html, ops_html, peak_html

    profile = make_rich_profile(text=HOSTILE)
    profile.layers[1].type = HOSTILE
    profile.ops[0].device = HOSTILE
    tensor = profile.peak.tensors[0]
    tensor.dtype, tensor.category = HOSTILE, HOSTILE
    _shown_as_text(peak_html(profile), f"encoder{HOSTILE}", f"aten::mm{HOSTILE}", HOSTILE)
    _shown_as_text(layers_html(profile), f"encoder{HOSTILE}", f"encoder{HOSTILE}/dense", HOSTILE)
    _shown_as_text(ops_html(profile), f"aten::mm{HOSTILE}", HOSTILE, f"[0,{HOSTILE}]")


def test_the_comparison_tables_show_layer_and_op_names_as_text():
    a, b = make_rich_profile(name="a", text=HOSTILE), make_rich_profile(name="b", text=HOSTILE)
    b.peak.by_layer = {f"encoder{HOSTILE}": 2**20}
    b.ops[0].allocated_bytes //= 2
    a.ops[0].device = b.ops[0].device = HOSTILE
    _shown_as_text(
        render_compare_html(memprofile.compare(a, b)), f"encoder{HOSTILE}", f"aten::mm{HOSTILE} ({HOSTILE})"
    )  # an op is named with its device


def test_the_report_tables_show_devices_tensors_and_source_lines_as_text():
    profile = make_lined_profile(text=HOSTILE)
    profile.devices.append(Device(HOSTILE, "allocator", HOSTILE, 2**20, 0, 0))
    tensor = profile.peak.tensors[1]
    tensor.dtype, tensor.category = HOSTILE, HOSTILE
    fragment = render_fragment(profile)
    _shown_as_text(
        fragment,
        HOSTILE,
        f"allocator ({HOSTILE})",  # devices
        f"conv2d{HOSTILE}",
        f"encoder{HOSTILE}",
    )  # tensors: op, layer (dtype and kind: HOSTILE)
    cells = _shown_as_text(render_static_report(profile))
    assert any(c.startswith(f"logits = model{HOSTILE}(tokens)") for c in cells)  # the cell's source line
