"""The peak anatomy: when the peak device peaked and what was alive then."""

from __future__ import annotations

from memprofile.model.profile import Peak, Profile


def find_peak(profile: Profile) -> Peak | None:
    """The peak of the profile's peak device, located on its timeline.

    A device without category information (process RSS) counts everything
    as "other": it cannot tell parameters from activations.
    """
    device = profile.peak_device
    if device is None:
        return None
    timeline = profile.timeline(device.name)
    time_s = 0.0
    by_category: dict[str, int] = {}
    op = layer = None
    if timeline and timeline.live_bytes:
        i = max(range(len(timeline.live_bytes)), key=timeline.live_bytes.__getitem__)
        time_s = timeline.t[i]
        by_category = {c: col[i] for c, col in timeline.by_category.items() if col[i]}
        if timeline.op and timeline.op[i] >= 0:
            op = timeline.labels[timeline.op[i]]
        if timeline.layer and timeline.layer[i] >= 0:
            layer = timeline.labels[timeline.layer[i]]
    if not by_category:
        by_category = {"other": device.peak_bytes}
    return Peak(
        device=device.name,
        time_s=time_s,
        bytes=device.peak_bytes,
        op=op,
        layer=layer,
        by_category=by_category,
    )


def analyse(profile: Profile) -> Profile:
    """Fill the derived parts of a freshly built profile (in place; returned)."""
    profile.peak = find_peak(profile)
    return profile
