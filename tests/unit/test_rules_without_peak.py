"""The rules on a profile that has a framework's timeline but no peak anatomy
(an imported or older profile): each rule gives its answer or none, and none
fails (a failed rule shows the user a "rule failed" note)."""

from __future__ import annotations

from memprofile.analysis.rules import RULE_FAILED, suggest
from memprofile.model.profile import PHASES, Device, Profile, Timeline

MiB = 2**20


def _forward_only_torch_profile() -> Profile:
    """torch's CPU allocator, a forward pass that grew 64 MiB, `peak` None."""
    live = [16 * MiB, 48 * MiB, 80 * MiB, 80 * MiB]
    forward = PHASES.index("forward")
    return Profile(
        id="f" * 32,
        name="imported",
        started_at="2026-11-23T15:00:00.000+00:00",
        duration_s=0.3,
        source="y = model(x)",
        devices=[Device("cpu", "allocator", "c10", peak_bytes=80 * MiB, baseline_bytes=16 * MiB, end_bytes=80 * MiB)],
        timelines=[
            Timeline(
                "cpu",
                t=[0.0, 0.1, 0.2, 0.3],
                live_bytes=live,
                by_category={"activation": [0, 32 * MiB, 64 * MiB, 64 * MiB]},
                op=[-1, 0, 0, 0],
                layer=[-1, -1, -1, -1],
                labels=["aten::linear"],
                phase=[forward] * 4,
                recorded_points=4,
            )
        ],
    )


def test_no_rule_fails_on_a_torch_profile_without_its_peak_anatomy():
    profile = _forward_only_torch_profile()
    assert profile.peak is None
    suggest(profile)
    assert [w.message for w in profile.warnings if w.code == RULE_FAILED] == []
