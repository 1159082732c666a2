"""compare(a, b) and its renderings, on profiles built in the test."""

from __future__ import annotations

import memprofile
from memprofile.model.profile import Peak
from tests.builders import make_rich_profile

HOSTILE = "<img src=x onerror=alert(1)>"


def test_compare_puts_the_peak_first_and_ranks_changes_by_size():
    a, b = make_rich_profile(name="before"), make_rich_profile(name="after")
    b.devices = [d for d in b.devices]
    cpu = b.device("cpu")
    cpu.peak_bytes = a.device("cpu").peak_bytes - 2**30
    b.duration_s = a.duration_s * 1.5
    b.peak = Peak(
        "cpu", 0.1, cpu.peak_bytes, by_category={"parameter": 2**20, "activation": 2**20}, by_layer={"head": 3 * 2**20}
    )
    b.ops = b.ops[:10]
    c = memprofile.compare(a, b)
    assert c.device == "cpu" and c.saving_bytes == 2**30 and abs(c.time_change - 0.5) < 1e-9
    assert [x.name for x in c.categories] == ["parameter", "activation"]
    assert c.categories[1].delta == -4 * 2**20
    assert c.layers[0].name.startswith("encoder") and c.layers[0].delta == -5 * 2**20
    assert c.more_ops == 590 - 15 and len(c.ops) == 15
    text = repr(c)
    assert text.startswith("memprofile compare 'before' -> 'after': peak -1.00 GiB") and "time +50 %" in text


def test_compare_html_escapes_names():
    a = make_rich_profile(name=HOSTILE, text=HOSTILE)
    b = make_rich_profile(name="b")
    html = memprofile.compare(a, b)._repr_mimebundle_()["text/html"]
    assert "<img" not in html and "&lt;img" in html


MiB = 2**20


def _run(name: str, peak: int, start: dict[str, int], end: dict[str, int], duration_s: float = 1.0):
    """A run of a training cell on the torch `cpu` allocator: the state it
    started with and the state it left, per category."""
    from memprofile.model.profile import Device, Profile, Suggestion, Timeline

    cats = sorted({*start, *end})
    timeline = Timeline(
        "cpu",
        t=[0.0, duration_s / 2, duration_s],
        live_bytes=[sum(start.values()), peak, sum(end.values())],
        by_category={c: [start.get(c, 0), start.get(c, 0), end.get(c, 0)] for c in cats},
    )
    device = Device(
        "cpu", "allocator", "c10", peak, sum(start.values()), sum(end.values()), baseline_by_category=dict(start)
    )
    return Profile(
        id=name.ljust(32, "0"),
        name=name,
        started_at="2026-11-23T15:00:00.000+00:00",
        duration_s=duration_s,
        devices=[device],
        timelines=[timeline],
        peak=Peak("cpu", duration_s / 2, peak, by_category={"activation": peak}),
        suggestions=[Suggestion("gradient_checkpointing", "Checkpoint", "", "", can_try=True, try_change="checkpoint")],
    )


def test_state_a_run_created_is_found_from_its_categories_and_noted_in_the_comparison():
    from memprofile.analysis.compare import state_created

    params = {"parameter": 4 * MiB}
    cold = _run("cold", 40 * MiB, start=params, end={**params, "gradient": 4 * MiB, "optimizer_state": 8 * MiB})
    warm_state = {**params, "gradient": 4 * MiB, "optimizer_state": 8 * MiB}
    warm = _run("warm", 48 * MiB, start=warm_state, end=warm_state)
    # an optimizer's first step made its state, the first backward the gradients; "other" is no state
    assert state_created(cold) == {"gradient": 4 * MiB, "optimizer_state": 8 * MiB}
    assert state_created(warm) == {}
    # state freed during the run (zero_grad(set_to_none=True) at the end) is not created state
    assert state_created(_run("tidy", 40 * MiB, start=warm_state, end={**params, "optimizer_state": 8 * MiB})) == {}
    c = memprofile.compare(cold, warm)
    assert c.notes == [
        "'cold' created 4.00 MiB of gradients and 8.00 MiB of optimizer state during its run (it did not start with it)"
    ]
    assert "note: 'cold' created" in repr(c) and "created 4.00 MiB of gradients" in c._repr_mimebundle_()["text/html"]
    assert memprofile.compare(warm, warm).notes == []


def test_a_measured_saving_has_one_percentage_in_the_heading_and_on_the_card():
    """The card a trial was started from had a different peak (its run was
    cold) than the run the trial compared: the percentage on that card is the
    comparison's (saving over the peak of the run measured against)."""
    from memprofile.render.compare import headline, measured_line
    from memprofile.render.text import saving_line
    from memprofile.trial import record_measurement

    state = {"parameter": 4 * MiB, "gradient": 4 * MiB, "optimizer_state": 8 * MiB}
    original = _run("blocks", 113 * MiB, start={"parameter": 4 * MiB}, end=state)
    before, after = (
        _run("blocks (as is, warm)", 100 * MiB, state, state),
        _run("after", 83 * MiB, state, state, duration_s=1.1),
    )
    c = memprofile.compare(before, after)
    assert c.peak_change_percent == -17.0 and headline(c) == "peak -17.0 MiB (-17 %) on cpu, time +10 %"
    for profile in (original, before):
        record_measurement(profile, "checkpoint", c)
        s = profile.suggestions[0]
        assert s.measured_peak_before_bytes == 100 * MiB
        assert saving_line(s, profile.peak_bytes) == "measured: -17.0 MiB (-17 %), time +10 %"
    # and it survives the profile's JSON (the panel and the report read it there)
    again = memprofile.Profile.from_json(original.to_json()).suggestions[0]
    assert saving_line(again, original.peak_bytes) == "measured: -17.0 MiB (-17 %), time +10 %"
    c.notes.append("compared the second, warm run as is")
    assert measured_line(c) == "peak -17.0 MiB (-17 %) on cpu, time +10 %; compared the second, warm run as is"


def test_the_panels_comparison_names_kinds_as_the_card_does():
    from memprofile.render.panel import comparison_payload

    a, b = make_rich_profile(name="before"), make_rich_profile(name="after")
    b.peak = Peak("cpu", 0.1, a.peak.bytes, by_category={"optimizer_state": 2**20, "activation": 2**20})
    names = [row["name"] for row in comparison_payload(memprofile.compare(a, b))["categories"]]
    assert "optimizer state" in names and "optimizer_state" not in names


def _steps(detailed_peak: int, later: list[int]) -> list:
    """3 detailed steps at `detailed_peak`, then steps whose peaks are the C heap's estimates."""
    from memprofile.model.profile import StepStat

    steps = [StepStat(i, i - 1.0, float(i), True, peak_bytes=detailed_peak, end_bytes=0) for i in (1, 2, 3)]
    steps += [
        StepStat(i, i - 1.0, float(i), False, peak_estimate_bytes=value) for i, value in enumerate(later, start=4)
    ]
    return steps


def test_a_leak_across_steps_is_compared_by_the_step_that_went_highest():
    # GIVEN a run whose steps after the detail grew 30 MiB (a tensor kept per step; the gallery's
    # "leaky"), and its fix, whose steps stay at the detailed ones' peak
    leaky = _run("leaky", 11 * MiB, start={"parameter": 4 * MiB}, end={"parameter": 4 * MiB})
    leaky.steps = _steps(11 * MiB, [11 * MiB + k * MiB // 2 for k in range(1, 58)])
    fixed = _run("fixed", 10 * MiB, start={"parameter": 4 * MiB}, end={"parameter": 4 * MiB})
    fixed.steps = _steps(10 * MiB, [10 * MiB + 100_000] * 57)
    # WHEN they are compared
    c = memprofile.compare(leaky, fixed)
    # THEN the leaky run's peak is its highest step's, said to be an estimate, and the fix saves the leak
    assert (c.peak.before, c.peak.after) == (11 * MiB + 57 * MiB // 2, 10 * MiB)
    assert c.notes[0].startswith("'leaky' peaked at step 60 (~39.5 MiB, estimated from the C heap's growth), above")
    assert "peak -29.5 MiB (-75 %)" in repr(c)
    # and the other way round (a change that brings the leak) it is the after side that grew
    back = memprofile.compare(fixed, leaky)
    assert back.saving_bytes == -(c.saving_bytes) and back.notes[0].startswith("'leaky' peaked at step 60")
    # runs whose later steps stay within the detailed ones' margin compare their detailed peaks
    assert memprofile.compare(fixed, fixed).peak.before == 10 * MiB and memprofile.compare(fixed, fixed).notes == []
