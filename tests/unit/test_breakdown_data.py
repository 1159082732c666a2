"""What the layers, ops, peak and suggestions views draw, as plain data
(render/breakdown_data.py), on profiles built in the test: no bokeh, no
framework."""

from __future__ import annotations

import math

from memprofile.model.profile import LayerStat, Suggestion
from memprofile.render.breakdown_data import (
    LAYER_KINDS,
    MAX_LAYERS,
    MAX_OPS,
    MAX_PEAK_LAYERS,
    MAX_TENSORS,
    bar_columns,
    depth_options,
    layer_bars,
    layer_depths,
    layer_rows,
    layer_table,
    op_rows,
    op_table,
    peak_headline,
    peak_kinds,
    peak_layers,
    suggestions_html,
    tensor_table,
)
from memprofile.render.palette import CATEGORY_COLORS, SERIES, UNKNOWN_CATEGORY
from memprofile.units import category_label, fmt_bytes
from tests.builders import make_lined_profile, make_profile, make_rich_profile

HOSTILE = '<img src=x onerror=alert(1)>"&'
MiB = 2**20


def _equal_lengths(columns: dict) -> int:
    lengths = {len(v) for v in columns.values()}
    assert len(lengths) == 1, {k: len(v) for k, v in columns.items()}
    return lengths.pop()


def test_layers_are_ordered_by_their_bars_and_capped():
    # GIVEN 70 layers of growing activations, and one that holds and allocates nothing
    profile = make_profile()
    profile.layers = [LayerStat(f"block{i}", "Block", None, activation_bytes=i * MiB) for i in range(1, 71)]
    profile.layers.append(LayerStat("idle", "Block", None))
    rows, hidden = layer_rows(profile)
    # THEN the longest bars come first, the idle layer is left out, the rest counted
    assert [r.name for r in rows[:2]] == ["block70", "block69"] and len(rows) == MAX_LAYERS
    assert hidden == 70 - MAX_LAYERS and "idle" not in {r.name for r in rows}


def test_layer_depths_follow_the_parents_and_survive_a_cycle():
    profile = make_rich_profile(text="")
    assert layer_depths(profile) == {"model": 0, "encoder": 1, "encoder/dense": 2, "head": 1}
    profile.layers = [LayerStat("a", "A", "b"), LayerStat("b", "B", "a")]
    assert layer_depths(profile) == {"a": 2, "b": 2}
    assert depth_options(2) == ["all depths", "depth ≤ 0", "depth ≤ 1", "depth ≤ 2"]


def test_layer_bars_put_the_largest_last_with_each_kinds_text():
    profile = make_rich_profile(text=HOSTILE)
    rows, hidden = layer_rows(profile)
    bars = layer_bars(profile, rows)
    assert _equal_lengths(bars) == len(rows) and hidden == 0
    # drawn bottom up: the largest layer is the last row, on top
    assert bars["layer"][-1] == f"encoder{HOSTILE}" and bars["depth"][-1] == 1
    encoder = rows[0]
    for k in LAYER_KINDS:
        assert bars[k][-1] == getattr(encoder, f"{k}_bytes")
        assert bars[f"{k}_text"][-1] == fmt_bytes(getattr(encoder, f"{k}_bytes"))
    assert bars["peak_text"][-1] == fmt_bytes(encoder.peak_bytes)
    # user text stays data: a renderer sets it as text
    assert bars["line_text"] == [""] * len(rows)


def test_tables_carry_line_numbers_as_floats_blank_where_unknown():
    profile = make_lined_profile()
    rows, _ = layer_rows(profile)
    layers = layer_table(rows)
    assert _equal_lengths(layers) == len(rows)
    assert list(layers)[-1] == "line" and all(n == 2.0 for n in layers["line"])
    ops, hidden = op_rows(profile)
    table = op_table(ops)
    assert _equal_lengths(table) == MAX_OPS and hidden == 600 - MAX_OPS
    assert table["allocated"] == sorted(table["allocated"], reverse=True)
    assert table["line"][:5] == [3.0, 2.0, 2.0, 2.0, 2.0] and math.isnan(table["line"][5])
    assert table["shapes"][0] == "[0,]"


def test_bars_are_drawn_bottom_up_with_their_colours():
    columns = bar_columns([("a", 3 * MiB), ("b", 1024)], ["#000000", "#ffffff"])
    assert columns == {
        "name": ["b", "a"],
        "bytes": [1024, 3 * MiB],
        "text": ["1.00 KiB", fmt_bytes(3 * MiB)],
        "color": ["#ffffff", "#000000"],
    }


def test_the_peak_headline_escapes_what_user_code_named():
    profile = make_lined_profile(text=HOSTILE)
    head = peak_headline(profile, profile.peak)
    assert HOSTILE not in head and "&lt;img src=x onerror=alert(1)&gt;&quot;&amp;" in head
    assert head.startswith(f"<p>Peak <b>{fmt_bytes(profile.peak.bytes)}</b> on cpu at ")
    assert ", line 4 <code>loss.backward()</code></p>" in head


def test_the_peaks_bars_by_kind_and_by_layer():
    profile = make_lined_profile()
    profile.peak.by_category["kind from a newer memprofile"] = MiB
    items, colors = peak_kinds(profile.peak)
    assert items[0] == (category_label("parameter"), 16 * MiB)
    assert colors[0] == CATEGORY_COLORS["parameter"] and colors[-1] == UNKNOWN_CATEGORY
    layers, colors = peak_layers(profile)
    assert layers[0] == ("encoder", 100 * MiB) and colors == [SERIES] * len(layers)
    # at most the largest MAX_PEAK_LAYERS
    profile.peak.by_layer = {f"layer{i}": i for i in range(1, 40)}
    layers, _ = peak_layers(profile)
    assert len(layers) == MAX_PEAK_LAYERS


def test_the_largest_tensors_as_columns():
    profile = make_lined_profile()
    table = tensor_table(profile.peak)
    assert _equal_lengths(table) == len(profile.peak.tensors) <= MAX_TENSORS
    assert table["layer"][0] == "" and table["line"][:3] == ["line 3", "line 2", "before the cell"]
    # the allocator's block larger than the tensor is said
    assert table["size"][1] != fmt_bytes(table["bytes"][1])
    profile.peak.tensors = profile.peak.tensors * 10
    assert _equal_lengths(tensor_table(profile.peak)) == MAX_TENSORS


def test_suggestions_are_a_list_with_everything_escaped():
    profile = make_profile()
    profile.suggestions = [
        Suggestion("amp", f"Use {HOSTILE}", f"because {HOSTILE}", f"x = '{HOSTILE}'", estimated_saving_bytes=64 * MiB)
    ]
    html = suggestions_html(profile)
    assert html.startswith("<ol class='mp-suggestions'><li><b>Use &lt;img") and html.endswith("</li></ol>")
    assert HOSTILE not in html and html.count("&lt;img") == 3
    assert " — " in html  # the saving line
