"""Profiles built by hand for renderer and model tests (no collector runs)."""

from __future__ import annotations

from memprofile.model.profile import Device, Peak, Profile, Timeline


def make_profile(n_points: int = 50, name: str = "cell", peak_at: int | None = None, **overrides) -> Profile:
    """A small, valid host-only profile built by hand (no collector runs).

    n_points=0 gives a profile with no device and no peak (nothing was measured)."""
    if n_points == 0:
        return Profile(id="0" * 32, name=name, started_at="2026-11-23T15:00:00.000+00:00", duration_s=0.0, **overrides)
    peak_at = n_points // 2 if peak_at is None else peak_at
    base = 100 * 2**20
    t = [i * 0.005 for i in range(n_points)]
    live = [base + (i % 7) * 2**20 for i in range(n_points)]
    live[peak_at] = base + 300 * 2**20
    fields = dict(
        id="0123456789abcdef0123456789abcdef",
        name=name,
        started_at="2026-11-23T15:00:00.000+00:00",
        duration_s=t[-1] if t else 0.0,
        devices=[
            Device(
                name="host",
                kind="process",
                source="rss",
                peak_bytes=max(live),
                baseline_bytes=live[0],
                end_bytes=live[-1],
                capacity_bytes=16 * 2**30,
            )
        ],
        timelines=[Timeline(device="host", t=t, live_bytes=live, recorded_points=n_points)],
    )
    fields.update(overrides)
    profile = Profile(**fields)
    profile.peak = Peak(device="host", time_s=t[peak_at], bytes=max(live), by_category={"other": max(live)})
    return profile
