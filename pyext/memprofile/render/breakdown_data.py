"""What the breakdown views draw, as plain data: the layers' bars and table,
the ops' table, the peak's headline, bars and largest tensors, the
suggestions' list.

No bokeh here (render/interactive.py draws these): every function takes a
Profile (or its rows) and returns columns (a dict of equal-length lists, as a
ColumnDataSource takes them) or text. Text from user code goes into columns
as data; into HTML only through `html.escape`.
"""

from __future__ import annotations

from html import escape
from typing import Any

from memprofile.model.profile import LayerStat, OpStat, Peak, Profile
from memprofile.render.lines import line_label, placed_by_layer, shape_text, tensor_bytes_text
from memprofile.render.palette import CATEGORY_COLORS, SERIES, UNKNOWN_CATEGORY
from memprofile.render.text import how_to_apply, saving_line
from memprofile.units import category_label, fmt_bytes, fmt_seconds

MAX_LAYERS = 60
MAX_OPS = 500
MAX_TENSORS = 20
#: The peak's bars by layer: the largest this many.
MAX_PEAK_LAYERS = 15
LAYER_KINDS = ("parameter", "gradient", "optimizer_state", "activation", "temporary")

Columns = dict[str, list[Any]]


def line_numbers(lines: list[int | None]) -> list[float]:
    """Line numbers for a table column: floats with NaN (shown blank) where
    unknown, so the column sorts by number."""
    return [float("nan") if n is None else float(n) for n in lines]


def layer_depths(profile: Profile) -> dict[str, int]:
    """How deep each layer is nested (0: a layer without a known parent)."""
    parents = {layer.name: layer.parent for layer in profile.layers}
    depth: dict[str, int] = {}
    for name in parents:
        d, seen, cur = 0, set(), parents.get(name)
        while cur is not None and cur in parents and cur not in seen:
            seen.add(cur)
            d += 1
            cur = parents.get(cur)
        depth[name] = d
    return depth


def _weight(layer: LayerStat) -> int:
    return sum(getattr(layer, f"{k}_bytes") for k in LAYER_KINDS)


def layer_rows(profile: Profile) -> tuple[list[LayerStat], int]:
    """The layers drawn (MAX_LAYERS at most) and how many more there are.
    Ordered by what the bars draw (a layer holding little at the peak but
    allocating much is a long bar); what each held at the peak is in the hover."""
    rows = sorted(profile.layers, key=lambda layer: (-_weight(layer), -layer.peak_bytes))
    rows = [layer for layer in rows if _weight(layer) or layer.peak_bytes]
    return rows[:MAX_LAYERS], max(0, len(rows) - MAX_LAYERS)


def layer_bars(profile: Profile, rows: list[LayerStat]) -> Columns:
    """The bars' columns, the largest layer last (drawn on top): each kind's
    bytes and its text, the depth (the depth filter), what the layer held at
    the peak and the line it allocated most on."""
    depth = layer_depths(profile)
    names = [layer.name for layer in reversed(rows)]
    full: Columns = {"layer": names, "depth": [depth.get(n, 0) for n in names]}
    by_name = {layer.name: layer for layer in rows}
    for k in LAYER_KINDS:
        full[k] = [getattr(by_name[n], f"{k}_bytes") for n in names]
    full["peak_text"] = [fmt_bytes(by_name[n].peak_bytes) for n in names]
    full["line_text"] = [line_label(by_name[n].line) for n in names]
    for k in LAYER_KINDS:
        full[f"{k}_text"] = [fmt_bytes(v) for v in full[k]]
    return full


def depth_options(max_depth: int) -> list[str]:
    """The depth filter's choices ('all depths', 'depth ≤ 0', ...)."""
    return ["all depths"] + [f"depth ≤ {d}" for d in range(max_depth + 1)]


def layer_table(rows: list[LayerStat]) -> Columns:
    """The layers' figures as a table's columns, with the cell line each
    allocated the most on."""
    return {
        "layer": [r.name for r in rows],
        "type": [r.type for r in rows],
        "peak": [r.peak_bytes for r in rows],
        **{k: [getattr(r, f"{k}_bytes") for r in rows] for k in LAYER_KINDS},
        "line": line_numbers([r.line for r in rows]),
    }


def op_rows(profile: Profile) -> tuple[list[OpStat], int]:
    """The ops listed (the MAX_OPS that allocated most) and how many more there are."""
    ops = sorted(profile.ops, key=lambda o: -o.allocated_bytes)
    return ops[:MAX_OPS], max(0, len(ops) - MAX_OPS)


def op_table(ops: list[OpStat]) -> Columns:
    return {
        "name": [o.name for o in ops],
        "device": [o.device for o in ops],
        "calls": [o.calls for o in ops],
        "allocated": [o.allocated_bytes for o in ops],
        "self": [o.self_allocated_bytes for o in ops],
        "freed": [o.freed_bytes for o in ops],
        "net": [o.net_bytes for o in ops],
        "max_alloc": [o.max_alloc_bytes for o in ops],
        "shapes": [" ".join(o.input_shapes) for o in ops],
        "line": line_numbers([o.line for o in ops]),
    }


def bar_columns(items: list[tuple[str, int]], colors: list[str]) -> Columns:
    """(name, bytes) bars as columns, the first item last (drawn on top)."""
    return {
        "name": [n for n, _ in reversed(items)],
        "bytes": [b for _, b in reversed(items)],
        "text": [fmt_bytes(b) for _, b in reversed(items)],
        "color": list(reversed(colors)),
    }


def peak_headline(profile: Profile, peak: Peak) -> str:
    """'Peak 1.2 GiB on cpu at 0.5 s, during op ..., in layer ..., line 4 ...' (HTML)."""
    source_text = profile.line_text(peak.line)
    return (
        f"<p>Peak <b>{fmt_bytes(peak.bytes)}</b> on {escape(peak.device)} at {fmt_seconds(peak.time_s)}"
        + (f", during op <code>{escape(peak.op)}</code>" if peak.op else "")
        + (f" in layer <code>{escape(peak.layer)}</code>" if peak.layer else "")
        + (f", {escape(line_label(peak.line))}" if line_label(peak.line) else "")
        + (f" <code>{escape(source_text)}</code>" if source_text else "")
        + "</p>"
    )


def peak_kinds(peak: Peak) -> tuple[list[tuple[str, int]], list[str]]:
    """The bars of what is alive at the peak by kind, and their colours."""
    items = [(category_label(c), b) for c, b in peak.by_category.items()]
    return items, [CATEGORY_COLORS.get(c, UNKNOWN_CATEGORY) for c in peak.by_category]


def peak_layers(profile: Profile) -> tuple[list[tuple[str, int]], list[str]]:
    """The bars of what is alive at the peak by layer (the largest
    MAX_PEAK_LAYERS; memory made outside layers named by its line and op),
    and their colours."""
    top = list(placed_by_layer(profile).items())[:MAX_PEAK_LAYERS]
    return top, [SERIES] * len(top)


def tensor_table(peak: Peak) -> Columns:
    """The largest tensors alive at the peak (MAX_TENSORS); "size" says when
    the allocator's block is larger than the tensor."""
    tensors = peak.tensors[:MAX_TENSORS]
    return {
        "bytes": [t.bytes for t in tensors],
        "size": [tensor_bytes_text(t) for t in tensors],
        "kind": [category_label(t.category) for t in tensors],
        "shape": [shape_text(t) for t in tensors],
        "dtype": [t.dtype for t in tensors],
        "op": [t.op or "" for t in tensors],
        "layer": [t.layer or "" for t in tensors],
        "device": [t.device or "" for t in tensors],
        "line": [line_label(t.line) for t in tensors],
    }


def suggestions_html(profile: Profile) -> str:
    """The suggestions as an ordered list: title, saving, evidence, how to apply, code."""
    items = []
    for s in profile.suggestions:
        saving = saving_line(s, profile.peak_bytes)
        items.append(
            f"<li><b>{escape(s.title)}</b>{' — ' + escape(saving) if saving else ''}"
            f"<div class='mp-muted'>{escape(s.evidence)}</div><div class='mp-muted'>{escape(how_to_apply(s))}</div>"
            f"<pre><code>{escape(s.code)}</code></pre></li>"
        )
    return f"<ol class='mp-suggestions'>{''.join(items)}</ol>"
