"""What the JupyterLab panel draws for one profile: the summary, the bokeh
views as `json_item`s (BokehJS in the panel embeds them), the suggestions as
data (the panel draws their buttons), the cell's lines with their figures as
data (the panel draws the bars), and the Python bokeh version (the panel's
BokehJS must be the same).

The views' only JavaScript is render/interactive.py's TRUSTED_JS constants;
`python -m memprofile.render.panel --write` writes them to
labextension/trusted_js.json, and the panel refuses a json_item carrying any
other code (a test fails when the file is stale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memprofile.model.codec import to_dict
from memprofile.model.profile import Profile
from memprofile.render.bundle import summarise
from memprofile.render.lines import source_rows


def view_items(profile: Profile) -> dict[str, Any]:
    """Each view as a bokeh json_item: timeline (the devices' plots in a
    column, the peak device first), peak anatomy, layers, ops."""
    from bokeh.embed import json_item
    from bokeh.layouts import column
    from bokeh.models import Div

    from memprofile.render.interactive import layers_view, ops_view, peak_view, timeline_view

    devices = {d.name: d for d in profile.devices}
    peak_device = profile.peak_device.name if profile.peak_device else ""
    timelines = sorted((tl for tl in profile.timelines if tl.device in devices and tl.t),
                       key=lambda tl: tl.device != peak_device)
    plots = [timeline_view(profile, tl, devices[tl.device], legend="below") for tl in timelines]
    timeline = column(*plots, sizing_mode="stretch_width") if plots else Div(text="<p>No timeline was recorded.</p>")
    return {
        "timeline": json_item(timeline),
        "peak": json_item(peak_view(profile)),
        "layers": json_item(layers_view(profile, legend="below")),
        "ops": json_item(ops_view(profile)),
    }


def panel_payload(profile: Profile) -> dict[str, Any]:
    import bokeh

    from memprofile.render.text import how_to_apply, saving_line
    from memprofile.trial import RERUN_WARNING

    return {
        "id": profile.id,
        "bokeh_version": bokeh.__version__,
        "summary": to_dict(summarise(profile)),
        "views": view_items(profile),
        "suggestions": [
            {**to_dict(s), "saving_text": saving_line(s, profile.peak_bytes), "how": how_to_apply(s)}
            for s in profile.suggestions
        ],
        "source": profile.source,
        "rerun_warning": RERUN_WARNING,
        # Every line of the cell (line 0: memory from before it); empty when lines are unknown.
        "lines": to_dict(source_rows(profile)),
        "peak_line": profile.peak.line if profile.peak else None,
    }


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
