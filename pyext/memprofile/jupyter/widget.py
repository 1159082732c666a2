"""An ipywidgets view of a Profile, for frontends with widgets but without the
JupyterLab extension (VS Code, Colab, classic Notebook).

Tabs: summary (the static HTML fragment), peak anatomy (with the cell's
lines), layers, ops (with a
filter box handled in the kernel), suggestions (each with its code in a
selectable box, the magic that inserts it, and for changes that can be
applied in place a "Try it" button that asks before it runs the cell again
(two or three times) and then shows the measured difference). Tables are
render/table.py's, which escapes every cell.
No JavaScript is needed, so it renders wherever ipywidgets do.
"""

from __future__ import annotations

from html import escape
from typing import Any

from memprofile.model.profile import Profile, Suggestion
from memprofile.render.lines import line_label, placed_by_layer, shape_text, tensor_bytes_text
from memprofile.render.palette import ERROR
from memprofile.render.table import html_table
from memprofile.render.text import RERUN_BUTTON, RERUN_WARNING, saving_line
from memprofile.units import category_label, fmt_bytes, fmt_seconds

MAX_ROWS = 100


def _table(headers: list[str], rows: list[list[str]], more: int = 0) -> str:
    """A table in the widget's style (no stylesheet reaches a widget's HTML)."""
    return html_table(
        headers,
        rows,
        more=more,
        attrs={"style": "border-collapse:collapse;font-size:12px"},
        header_style="text-align:left;padding:2px 10px 2px 0",
        cell_style="padding:1px 10px 1px 0",
    )


def _line_cell(line: int | None) -> str:
    """The cell line an op or layer allocated the most on ('' when unknown)."""
    return "" if line is None else ("before" if line == 0 else str(line))


def lines_html(profile: Profile) -> str:
    """The cell's source with per-line bars (bytes alive at the peak, by kind) and allocations."""
    from memprofile.render.html import full_lines

    return full_lines(profile)


def peak_html(profile: Profile) -> str:
    peak = profile.peak
    if peak is None:
        return "<p>No peak: nothing was measured.</p>"
    source = profile.line_text(peak.line)
    parts = [
        f"<p>Peak <b>{fmt_bytes(peak.bytes)}</b> on {escape(peak.device)} at {fmt_seconds(peak.time_s)}"
        + (f", op <code>{escape(peak.op)}</code>" if peak.op else "")
        + (f", layer <code>{escape(peak.layer)}</code>" if peak.layer else "")
        + (f", {escape(line_label(peak.line))}" if line_label(peak.line) else "")
        + (f" <code>{escape(source)}</code>" if source else "")
        + "</p>"
    ]
    if peak.by_category:
        parts.append(
            _table(["kind", "bytes"], [[category_label(c), fmt_bytes(b)] for c, b in peak.by_category.items()])
        )
    by_layer = placed_by_layer(profile)  # "(no layer)" placed on lines: "line 3: cross_entropy"
    if by_layer:
        items = list(by_layer.items())
        parts.append(
            _table(
                ["layer (or line: op)", "bytes"], [[n, fmt_bytes(b)] for n, b in items[:20]], max(0, len(items) - 20)
            )
        )
    if peak.tensors:
        parts.append(
            _table(
                ["size", "kind", "shape", "dtype", "op", "layer", "line"],
                [
                    [
                        tensor_bytes_text(t),
                        category_label(t.category),
                        shape_text(t),
                        t.dtype,
                        t.op or "",
                        t.layer or "",
                        line_label(t.line),
                    ]
                    for t in peak.tensors
                ],
            )
        )
    return "".join(parts)


def layers_html(profile: Profile) -> str:
    if not profile.layers:
        return "<p>No layer was seen in this profile.</p>"
    rows = sorted(profile.layers, key=lambda layer: -layer.peak_bytes)
    return _table(
        [
            "layer",
            "type",
            "at the peak",
            "parameters",
            "gradients",
            "optimizer state",
            "activations",
            "temporaries",
            "line",
        ],
        [
            [
                layer.name,
                layer.type,
                fmt_bytes(layer.peak_bytes),
                fmt_bytes(layer.parameter_bytes),
                fmt_bytes(layer.gradient_bytes),
                fmt_bytes(layer.optimizer_state_bytes),
                fmt_bytes(layer.activation_bytes),
                fmt_bytes(layer.temporary_bytes),
                _line_cell(layer.line),
            ]
            for layer in rows[:MAX_ROWS]
        ],
        max(0, len(rows) - MAX_ROWS),
    )


def ops_html(profile: Profile, query: str = "") -> str:
    q = query.lower()
    ops = [o for o in sorted(profile.ops, key=lambda o: -o.allocated_bytes) if q in o.name.lower()]
    if not ops:
        return "<p>No op matches.</p>" if q else "<p>No op was recorded in this profile.</p>"
    return _table(
        ["op", "device", "calls", "allocated", "self", "net", "largest block", "line", "shapes"],
        [
            [
                o.name,
                o.device,
                f"{o.calls:,}",
                fmt_bytes(o.allocated_bytes),
                fmt_bytes(o.self_allocated_bytes),
                fmt_bytes(o.net_bytes),
                fmt_bytes(o.max_alloc_bytes),
                _line_cell(o.line),
                " ".join(o.input_shapes),
            ]
            for o in ops[:MAX_ROWS]
        ],
        max(0, len(ops) - MAX_ROWS),
    )


def insert_hint_html(profile: Profile, suggestion_id: str, placement: str) -> str:
    """How to insert a fix from a widget: a kernel-side widget cannot add a
    cell (cell payloads ride only on replies to executed code), so the magic
    that turns its own cell into the fix is named, ready to paste."""
    magic = f"%memprofile insert {suggestion_id} {profile.id[:8]}"
    where = (
        "then move that cell to the top of the notebook and restart the kernel"
        if placement == "top"
        else "it becomes the fix, to run after this cell"
    )
    return f"<div style='opacity:.8'>Insert: run <code>{escape(magic)}</code> in a new cell; {escape(where)}.</div>"


def _headline_html(profile: Profile, s: Suggestion) -> str:
    saving = saving_line(s, profile.peak_bytes)
    return f"<b>{escape(s.title)}</b> <span style='opacity:.7'>{escape(saving)}</span><div>{escape(s.evidence)}</div>"


def suggestion_card(profile: Profile, s: Suggestion) -> Any:
    """Title, figures, evidence, the code, how to insert it, and for changes
    that can be applied in place a "Try it" button that asks first."""
    import ipywidgets as widgets

    headline = widgets.HTML(_headline_html(profile, s))
    parts = [
        headline,
        widgets.Textarea(value=s.code, disabled=False, layout=widgets.Layout(width="100%", height="90px")),
        widgets.HTML(insert_hint_html(profile, s.id, s.placement)),
    ]
    if s.try_change:
        parts.append(_try_controls(profile, s, headline))
    card = widgets.VBox(parts)
    card.headline = headline  # for scripts and tests
    return card


def _try_controls(profile: Profile, s: Suggestion, headline: Any) -> Any:
    import ipywidgets as widgets

    can_run = bool(profile.source.strip())
    button = widgets.Button(
        description="Try it",
        icon="flask",
        disabled=not can_run,
        tooltip="run the cell as is and with this change, and measure both"
        if can_run
        else "this profile has no cell source: use memprofile.try_change(fn, ...)",
    )
    confirm = widgets.Button(description=RERUN_BUTTON, button_style="warning")
    cancel = widgets.Button(description="Cancel")
    question = widgets.HBox([widgets.HTML(f"<span>{escape(RERUN_WARNING)}</span>"), confirm, cancel])
    question.layout.display = "none"
    status = widgets.HTML("")
    output = widgets.Output()

    def ask(_: Any) -> None:
        question.layout.display = "flex"
        button.disabled = True

    def back(_: Any) -> None:
        question.layout.display = "none"
        button.disabled = False

    def run(_: Any) -> None:
        question.layout.display = "none"
        status.value = f"<i>running the cell with --try {escape(s.try_change or '')}…</i>"
        from memprofile.jupyter.magic import try_in_kernel

        try:
            with output:
                trial = try_in_kernel(profile, s.try_change or "")
        except Exception as exc:  # shown in the card; the profiles of both runs are stored
            status.value = (
                f"<span style='color:{ERROR}'>the trial raised {escape(type(exc).__name__)}: "
                f"{escape(str(exc)[:500])}</span>"
            )
        else:
            headline.value = _headline_html(profile, s)
            from memprofile.render.compare import measured_line

            status.value = f"<b>tried:</b> {escape(measured_line(trial.comparison))}"
        button.disabled = False

    button.on_click(ask)
    cancel.on_click(back)
    confirm.on_click(run)
    box = widgets.VBox([button, question, status, output])
    box.try_button, box.confirm_button, box.cancel_button, box.status = button, confirm, cancel, status
    return box


def profile_widget(profile: Profile) -> Any:
    import ipywidgets as widgets

    from memprofile.render.html import render_fragment

    ops_box = widgets.HTML(ops_html(profile))
    search = widgets.Text(placeholder="filter ops by name", description="Filter")

    def refilter(change: dict) -> None:
        ops_box.value = ops_html(profile, change["new"])

    search.observe(refilter, names="value")
    suggestions = [suggestion_card(profile, s) for s in profile.suggestions]
    tabs = widgets.Tab(
        children=[
            widgets.HTML(render_fragment(profile)),
            widgets.HTML(peak_html(profile) + lines_html(profile)),
            widgets.HTML(layers_html(profile)),
            widgets.VBox([search, ops_box]),
            widgets.VBox(suggestions or [widgets.HTML("<p>No suggestion for this profile.</p>")]),
        ]
    )
    for i, title in enumerate(
        [
            "Summary",
            "Peak",
            f"Layers ({len(profile.layers)})",
            f"Ops ({len(profile.ops)})",
            f"Suggestions ({len(profile.suggestions)})",
        ]
    ):
        tabs.set_title(i, title)
    tabs.ops_filter = search  # for scripts and tests: the filter box
    tabs.ops_table = ops_box
    return tabs
