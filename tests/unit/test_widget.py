"""The ipywidgets view, built on profiles made in the test (no frontend needed)."""

from __future__ import annotations

import pytest

from memprofile.model.profile import Suggestion
from tests.builders import make_lined_profile, make_profile, make_rich_profile

pytest.importorskip("ipywidgets")
HOSTILE = "<img src=x onerror=alert(1)>"


def test_widget_has_a_tab_per_view_and_filters_ops_in_the_kernel():
    profile = make_rich_profile()
    profile.suggestions = [
        Suggestion(
            "amp",
            "Use bf16 autocast",
            "activations are 71 % of the peak",
            "with torch.autocast('cpu'):\n    step()",
            estimated_saving_bytes=2**30,
        )
    ]
    w = profile.widget()
    titles = [w.get_title(i) for i in range(len(w.children))]
    assert titles == ["Summary", "Peak", "Layers (4)", "Ops (600)", "Suggestions (1)"]
    assert "Peak" in w.children[0].value and "16.5 MiB" in w.children[1].value
    assert "aten::mm" in w.ops_table.value and "and 500 more" in w.ops_table.value
    w.ops_filter.value = "op_59"
    assert "op_599" in w.ops_table.value and "aten::mm" not in w.ops_table.value
    w.ops_filter.value = "no such op"
    assert "No op matches" in w.ops_table.value
    code_box = w.children[4].children[0].children[1]
    assert code_box.value.startswith("with torch.autocast")
    assert "saves ~1.00 GiB" in w.children[4].children[0].children[0].value
    # a kernel-side widget cannot add a cell: it names the magic that turns a cell into the fix
    assert f"%memprofile insert amp {profile.id[:8]}" in w.children[4].children[0].children[2].value


def test_widget_escapes_user_text_and_handles_an_empty_profile():
    w = make_rich_profile(name=HOSTILE, text=HOSTILE).widget()
    for child in (w.children[1], w.children[2], w.ops_table):
        assert "<img" not in child.value and "&lt;img" in child.value
    empty = make_profile(n_points=0).widget()
    assert "No peak" in empty.children[1].value and "No op was recorded" in empty.ops_table.value


def test_widget_tables_have_a_line_column_and_the_peak_tab_the_cells_lines():
    import re

    from memprofile.jupyter.widget import layers_html, ops_html, peak_html

    profile = make_lined_profile()
    header = re.findall(r"<th[^>]*>([^<]*)</th>", ops_html(profile))
    rows = re.findall(r"<tr><td[^>]*>(.*?)</tr>", ops_html(profile))
    column = header.index("line")
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", "<td>" + r)[column] for r in rows]
    assert cells[:6] == ["3", "2", "2", "2", "2", ""]
    assert "<th style='text-align:left;padding:2px 10px 2px 0'>line</th>" in layers_html(profile)
    peak = peak_html(profile)
    assert "line 3: aten::log_softmax" in peak and "(no layer)" in peak  # 40 MiB placed, 16 MiB not
    assert "8.00 MiB tensor in a 15.8 MiB allocator block" in peak
    assert ", line 4 <code>loss.backward()</code>" in peak
    tab = profile.widget().children[1].value
    assert re.findall(r"data-line='(\d+)'", tab) == ["0", "1", "2", "3", "4", "5"]
    # a profile without lines: no listing, and "(no layer)" stays as it is
    rich = make_rich_profile()
    rich.peak.by_layer["(no layer)"] = 2**20
    assert "data-line" not in rich.widget().children[1].value and "(no layer)" in peak_html(rich)
