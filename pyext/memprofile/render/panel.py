"""What the JupyterLab panel draws for one profile: the summary, the bokeh
views as `json_item`s (BokehJS in the panel embeds them), the suggestions as
data (the panel draws their buttons), the cell's lines with their figures as
data (the panel draws the bars), and the Python bokeh version (the panel's
BokehJS must be the same); and a comparison as the panel draws it. Both are
model/wire.py's dataclasses, the types the panel is generated with.

The views' only JavaScript is render/interactive.py's TRUSTED_JS constants;
`python -m memprofile.render.panel --write` writes them to
labextension/trusted_js.json, and the panel refuses a json_item carrying any
other code (a test fails when the file is stale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memprofile.model.codec import to_dict
from memprofile.model.profile import Profile
from memprofile.model.wire import ChangeRow, PanelComparison, PanelProfile, PanelSuggestion
from memprofile.render.bundle import summarise
from memprofile.render.lines import source_rows

if TYPE_CHECKING:
    from memprofile.analysis.compare import Change, Comparison


def view_items(profile: Profile) -> dict[str, Any]:
    """Each view as a bokeh json_item: timeline (the devices' plots in a
    column, the peak device first), peak anatomy, layers, ops."""
    from bokeh.embed import json_item

    from memprofile.render.interactive import layers_view, ops_view, peak_view, ranks_view, timelines_view

    ranks = {"ranks": json_item(ranks_view(profile.merged))} if profile.merged else {}
    return {
        **ranks,
        "timeline": json_item(timelines_view(profile, legend="below")),
        "peak": json_item(peak_view(profile)),
        "layers": json_item(layers_view(profile, legend="below")),
        "ops": json_item(ops_view(profile)),
    }


def panel_profile(profile: Profile) -> PanelProfile:
    import bokeh

    from memprofile.analysis.predict.devices import known_devices
    from memprofile.render.text import RERUN_WARNING, how_to_apply, saving_line

    return PanelProfile(
        id=profile.id,
        bokeh_version=bokeh.__version__,
        summary=summarise(profile),
        views=view_items(profile),
        suggestions=[
            PanelSuggestion(**vars(s), saving_text=saving_line(s, profile.peak_bytes), how=how_to_apply(s))
            for s in profile.suggestions
        ],
        source=profile.source,
        rerun_warning=RERUN_WARNING,
        # render/lines.py's rows, as the wire's record
        lines=source_rows(profile),
        peak_line=profile.peak.line if profile.peak else None,
        predictions=list(profile.predictions),
        known_devices=known_devices(),
    )


def panel_payload(profile: Profile) -> dict[str, Any]:
    """panel_profile as JSON-ready data."""
    return to_dict(panel_profile(profile))


def panel_comparison(c: Comparison) -> PanelComparison:
    """A Comparison as the panel draws it (as text)."""
    from memprofile.render.compare import headline
    from memprofile.units import category_label

    def rows(changes: list[Change], label=lambda name: name) -> list[ChangeRow]:
        return [ChangeRow(label(r.name), r.before, r.after, r.delta) for r in changes]

    return PanelComparison(
        a=c.a.id,
        b=c.b.id,
        a_name=c.a.name,
        b_name=c.b.name,
        device=c.device,
        headline=headline(c),
        peak=rows([c.peak])[0],
        saving_bytes=c.saving_bytes,
        peak_change_percent=c.peak_change_percent,
        notes=list(c.notes),
        time_change=c.time_change,
        categories=rows(c.categories, category_label),
        layers=rows(c.layers),  # the names the card shows
        ops=rows(c.ops),
        more_layers=c.more_layers,
        more_ops=c.more_ops,
    )


def comparison_payload(c: Comparison) -> dict[str, Any]:
    """panel_comparison as JSON-ready data."""
    return to_dict(panel_comparison(c))


TRUSTED_JS_PATH = Path(__file__).resolve().parents[3] / "labextension" / "trusted_js.json"


def trusted_js_text() -> str:
    from memprofile.render.interactive import TRUSTED_JS

    return json.dumps(sorted(TRUSTED_JS), indent=1) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        TRUSTED_JS_PATH.write_text(trusted_js_text(), encoding="utf-8")
        print(f"wrote {TRUSTED_JS_PATH}")
    else:
        sys.stdout.write(trusted_js_text())
