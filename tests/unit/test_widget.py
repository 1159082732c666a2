"""The ipywidgets view, built on profiles made in the test (no frontend needed)."""

from __future__ import annotations

import pytest

from memprofile.model.profile import Suggestion
from tests.builders import make_profile, make_rich_profile

pytest.importorskip("ipywidgets")
HOSTILE = "<img src=x onerror=alert(1)>"


def test_widget_has_a_tab_per_view_and_filters_ops_in_the_kernel():
    profile = make_rich_profile()
    profile.suggestions = [Suggestion("amp", "Use bf16 autocast", "activations are 71 % of the peak",
                                      "with torch.autocast('cpu'):\n    step()", estimated_saving_bytes=2**30)]
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
