"""The cell output: the custom MIME type (a ProfileSummary) plus HTML and text fallbacks."""

from __future__ import annotations

from memprofile.model.codec import to_dict
from memprofile.model.decimate import minmax_indices
from memprofile.model.profile import CATEGORIES, ErrorInfo, Profile
from memprofile.model.summary import ProfileSummary, Sparkline, SuggestionBrief
from memprofile.render.lines import peak_lines, steps_brief
from memprofile.render.prediction import fits_line
from memprofile.render.sparkline import draw
from memprofile.render.text import failure_place

MIME_TYPE = "application/vnd.memprofile.profile.v1+json"
SPARKLINE_POINTS = 240
#: The card shows the error's type and message, not its traceback (the cell's
#: own error output has it); a huge message (a tensor's repr) is cut.
MAX_ERROR_MESSAGE = 2000
#: The largest tensors alive at the peak that the card names.
CARD_TENSORS = 3


def sparkline_series(profile: Profile, max_points: int = SPARKLINE_POINTS) -> tuple[str, list[float], list[int]] | None:
    """The peak device's live bytes over time, thinned to `max_points`: (device, t, bytes)."""
    device = profile.peak_device
    timeline = profile.timeline(device.name) if device else None
    if timeline is None or not timeline.t:
        return None
    keep = minmax_indices(timeline.live_bytes, max_points)
    return timeline.device, [round(timeline.t[i], 6) for i in keep], [timeline.live_bytes[i] for i in keep]


def sparkline(profile: Profile, max_points: int = SPARKLINE_POINTS) -> Sparkline | None:
    series = sparkline_series(profile, max_points)
    if series is None:
        return None
    device, t, live = series
    return Sparkline(device=device, t=t, bytes=live, drawing=draw(device, t, live))


def _brief_error(error: ErrorInfo | None) -> ErrorInfo | None:
    if error is None:
        return None
    message = error.message
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + f"… ({len(error.message) - MAX_ERROR_MESSAGE:,} more characters)"
    # Where it failed stays: the card says which op, layer and line asked for how much.
    return ErrorInfo(
        type=error.type,
        message=message,
        op=error.op,
        layer=error.layer,
        requested_bytes=error.requested_bytes,
        line=error.line,
        headline=error.headline,
        message_frames=error.message_frames,
    )


def summarise(profile: Profile) -> ProfileSummary:
    peak = profile.peak
    by_category = {c: (peak.by_category.get(c, 0) if peak else 0) for c in CATEGORIES}
    top = max(profile.suggestions, key=lambda s: s.estimated_saving_bytes or 0, default=None)
    return ProfileSummary(
        schema_version=profile.schema_version,
        id=profile.id,
        name=profile.name,
        started_at=profile.started_at,
        duration_s=profile.duration_s,
        peak_bytes=profile.peak_bytes,
        peak_device=peak.device if peak else None,
        peak_time_s=peak.time_s if peak else None,
        devices=profile.devices,
        by_category=by_category,
        sparkline=sparkline(profile),
        top_suggestion=SuggestionBrief(top.id, top.title, top.estimated_saving_bytes) if top else None,
        suggestion_count=len(profile.suggestions),
        error=_brief_error(profile.error),
        error_place=(failure_place(profile.error) or None) if profile.error else None,
        warnings=list(profile.warnings),
        peak_op=peak.op if peak else None,
        peak_layer=peak.layer if peak else None,
        peak_line=peak.line if peak else None,
        peak_line_text=profile.line_text(peak.line) if peak else None,
        peak_tensors=list(peak.tensors[:CARD_TENSORS]) if peak else [],
        peak_lines=peak_lines(profile),
        steps=steps_brief(profile),
        peak_scope=profile.peak_scope,
        fits_line=fits_line(profile.predictions),
    )


def mime_bundle(profile: Profile) -> dict:
    from memprofile.render.html import render_fragment
    from memprofile.render.text import render_text

    return {
        MIME_TYPE: to_dict(summarise(profile)),
        "text/html": render_fragment(profile),
        "text/plain": render_text(profile),
    }
