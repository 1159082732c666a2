"""What the training steps say: which were recorded in detail and why the
detail ended, a step that peaked above every detailed one, and memory that
grows step after step (a tensor kept per step)."""

from __future__ import annotations

import ast

from memprofile.analysis.cell import CellCode
from memprofile.analysis.growth import GROWTH_BYTES, culprits, describe, measured_growth
from memprofile.model.profile import Note, Profile, StepStat
from memprofile.units import fmt_bytes, fmt_seconds, step_runs

MiB = 1 << 20
#: A step is "above" the detailed ones by this much (and 5 %).
ABOVE_BYTES = 16 * MiB


#: The codes of the notes step_notes writes (analyse replaces them when it runs again).
STEP_NOTE_CODES = frozenset({"budget_reached", "detail_steps", "detail_late", "step_above_detail", "step_growth"})


def step_notes(profile: Profile) -> list[Note]:
    notes = []
    steps = profile.steps
    # Why and when the framework's profiler stopped recording (torch's or TF's collector).
    why = profile.capture.get("torch_detail_why") or profile.capture.get("tf_detail_why")
    when = profile.capture.get("torch_detail_end_s") or profile.capture.get("tf_detail_end_s", "?")
    if why == "budget":
        where = (
            f"during step {next((s.index for s in steps if not s.detailed), len(steps) + 1)}"
            if steps
            else f"at {when} s"
        )
        notes.append(
            Note(
                "budget_reached",
                f"the profiler's own memory neared its budget ({profile.capture.get('budget', '?')}) "
                f"{where}: op, layer and kind detail ends there (the peak, ops and layers cover the run "
                f"up to then); the rest is measured by the process's resident memory (--budget raises it)",
                _budget_fix(profile),
            )
        )
    if not steps:
        return notes
    detailed = [s for s in steps if s.detailed]
    cheap = [s for s in steps if not s.detailed]
    exact = all(s.peak_bytes is not None for s in steps)
    if exact:
        source = "the allocator's own counters"
    elif all(s.peak_estimate_bytes is not None for s in cheap):
        source = (
            "an estimate from the C heap's growth since the detail (what a step keeps; a spike within a "
            "step shows in the process's resident memory, read at each step's end)"
        )
    elif "each step" in profile.capture.get("host_peak_from", ""):
        grouped = any(s.rss_peak_first for s in cheap)
        source = (
            f"the process's resident memory (the OS high-water mark, exact"
            f"{'; short steps read in groups' if grouped else ''})"
        )
    else:
        source = "the process's resident memory samples"
    if cheap and detailed and why != "budget":
        notes.append(
            Note(
                "detail_steps",
                f"{_span(detailed)} of {len(steps)} recorded in detail (ops, layers, "
                f"kinds); {_span(cheap)} by their boundaries, each one's peak from {source} "
                f"(--detail-steps N, A-B or all records others)",
            )
        )
        if detailed[0].index > 1:
            notes.append(
                Note(
                    "detail_late",
                    f"memory made before step {detailed[0].index} counts as from before "
                    f"the detail; what no model, optimizer or variable holds is not counted in it",
                )
            )
    notes.extend(_above_detail(profile, detailed, cheap, exact))
    if cheap:
        notes.extend(_after_last_step(profile, detailed))
    growth = _growth(profile)
    if growth is not None:
        notes.append(growth)
    return notes


def _budget_fix(profile: Profile) -> str | None:
    """The line that runs the cell (or script) again with twice the budget."""
    budget = profile.capture.get("budget_bytes", "")
    return rerun(profile, f"--budget {2 * int(budget) >> 20}M") if budget.isdigit() else None


def rerun(profile: Profile, options: str) -> str:
    """How to run it again with `options`: the magic line for a cell, the
    command for a script (memprofile run)."""
    script = profile.capture.get("script")
    return f"memprofile run {options} {script}" if script else f"%%memprofile {options}"


def _span(steps: list[StepStat]) -> str:
    return step_runs([s.index for s in steps])


def _step_peak(s: StepStat) -> tuple[int | None, str]:
    """A step's peak on the framework device and how it is known."""
    if s.peak_bytes is not None:
        return s.peak_bytes, "exact"
    if s.peak_estimate_bytes is not None:
        return s.peak_estimate_bytes, "estimate"
    return None, ""


def later_peak(profile: Profile) -> tuple[StepStat, int, str] | None:
    """(step, its peak, "exact" or "estimate"): the first step outside the
    detail whose peak on the framework device went above every detailed
    step's, where each step's peak is known (the allocator's counters) or
    estimated (the C heap, analysis/step_table.py)."""
    detailed = [s for s in profile.steps if s.detailed and s.peak_bytes is not None]
    cheap: list[tuple[StepStat, int, str]] = []
    for s in profile.steps:
        value, how = _step_peak(s)
        if not s.detailed and value is not None:
            cheap.append((s, value, how))
    if not detailed or not cheap:
        return None
    top = max(s.peak_bytes or 0 for s in detailed)
    highest = max(v for _, v, _ in cheap)
    step, value, how = next((s, v, how) for s, v, how in cheap if v >= highest)
    margin = max(MiB, top // 50) if how == "estimate" else max(ABOVE_BYTES, top // 20)
    return (step, value, how) if value > top + margin else None


def _above_detail(profile: Profile, detailed: list[StepStat], cheap: list[StepStat], exact: bool) -> list[Note]:
    if not detailed or not cheap:
        return []
    later = later_peak(profile)
    if later is not None:
        step, value, how = later
        top = max(s.peak_bytes or 0 for s in detailed)
        what = (
            ""
            if how == "exact"
            else ", estimated from the C heap's growth"
            + (f"; at least {fmt_bytes(step.end_estimate_bytes)} live at its end" if step.end_estimate_bytes else "")
        )
        figure = f"peak {fmt_bytes(value)}" if how == "exact" else f"~{fmt_bytes(value)}"
        return [
            Note(
                "step_above_detail",
                f"step {step.index} peaked above every detailed step ({figure} against "
                f"{fmt_bytes(top)}{what}): --detail-steps {step.index}-{step.index} records it in detail",
                rerun(profile, f"--detail-steps {step.index}-{step.index}"),
            )
        ]
    if exact:
        return []  # every step's peak on the device is known: none went higher
    spike = resident_spike(profile)
    if spike is None:
        return []
    worst, peak, rise, first, top_detail = spike
    which = f"step {worst.index}" if first == worst.index else f"one of steps {first}-{worst.index}"
    return [
        Note(
            "step_above_detail",
            f"{which} peaked above every detailed step (resident memory "
            f"{fmt_bytes(peak)}, {fmt_bytes(rise, signed=True)} over its start, against "
            f"{fmt_bytes(top_detail)}): --detail-steps {first}-{worst.index} "
            f"records {'it' if first == worst.index else 'them'} in detail",
            rerun(profile, f"--detail-steps {first}-{worst.index}"),
        )
    ]


def resident_spike(profile: Profile) -> tuple[StepStat, int, int, int, int] | None:
    """(step, its resident peak, its rise over its start, the first step its
    reading covers, the detailed steps' top): a step outside the detail that
    rose in resident memory above its start by more than any detailed step
    did. A step that makes and frees a large tensor rises and falls back
    (estimates from the heap at the steps' ends do not see it), where
    resident memory drifting up (glibc keeping freed pages) rises little in each."""
    detailed = [s for s in profile.steps if s.detailed and s.rss_peak_bytes is not None]
    cheap = [s for s in profile.steps if not s.detailed and s.rss_peak_bytes is not None]
    if not detailed or not cheap:
        return None
    start = {s.index: s.rss_end_bytes for s in profile.steps}

    def rise(s: StepStat) -> int:
        before = start.get((s.rss_peak_first or s.index) - 1)
        return (s.rss_peak_bytes or 0) - (before if before is not None else (s.rss_peak_bytes or 0))

    top_detail = max((s.rss_peak_bytes or 0) for s in detailed)
    top_rise = max(rise(s) for s in detailed)
    highest = max(rise(s) for s in cheap)
    # The first step that reached it (short steps are read in groups: the mark then names the group).
    worst = next(s for s in cheap if rise(s) >= highest - max(MiB, highest // 100))
    if highest <= top_rise + max(ABOVE_BYTES, top_detail // 20):
        return None
    return worst, worst.rss_peak_bytes or 0, highest, worst.rss_peak_first or worst.index, top_detail


def peak_scope(profile: Profile) -> str | None:
    """Where the breakdown (kinds, layers, lines, tensors at the peak)
    describes another moment than the headline peak, or a later step went
    higher than the detail: said next to the headline."""
    peak, device = profile.peak, profile.peak_device
    working = device.allocator_stats.get("working_peak_bytes") if device is not None else None
    if peak is not None and device is not None and working is not None:
        return (
            f"The cell freed memory before it worked: the most live on {device.name} was at its start "
            f"({fmt_bytes(device.baseline_bytes)}, from before the cell); the breakdown is of its work's own "
            f"peak, {fmt_bytes(peak.bytes)} at {fmt_seconds(peak.time_s)}."
        )
    detailed = [s for s in profile.steps if s.detailed]
    span = f"the detailed {_span(detailed)}" if detailed else "the detail"
    later = later_peak(profile)
    if later is not None:
        step, value, how = later
        figure = (
            fmt_bytes(value)
            if how == "exact"
            else f"~{fmt_bytes(value)} (estimated from the C heap"
            + (f"; at least {fmt_bytes(step.end_estimate_bytes)} live at its end)" if step.end_estimate_bytes else ")")
        )
        return (
            f"The peak and its breakdown are of {span}; a later step went higher: step {step.index}, {figure}; "
            f"--detail-steps {step.index}-{step.index} records it."
        )
    spike = resident_spike(profile) if not all(s.peak_bytes is not None for s in profile.steps) else None
    if spike is not None:
        worst, peak_rss, rise, first, _top = spike
        which = f"step {worst.index}" if first == worst.index else f"one of steps {first}-{worst.index}"
        return (
            f"The peak and its breakdown are of {span}; {which} rose higher in the process's resident memory "
            f"({fmt_bytes(rise, signed=True)} over its start, more than any detailed step); --detail-steps "
            f"{first}-{worst.index} records it."
        )
    why = profile.capture.get("torch_detail_why") or profile.capture.get("tf_detail_why")
    if why == "budget" and not profile.steps and peak is not None:
        when = profile.capture.get("torch_detail_end_s") or profile.capture.get("tf_detail_end_s", "?")
        host = profile.process_device
        after = (
            f"; after it only the process's resident memory was followed (its peak {fmt_bytes(host.peak_bytes)})"
            if host is not None
            else ""
        )
        counted = device is not None and device.peak_bytes > peak.bytes + max(MiB, peak.bytes // 50)
        return (
            f"The breakdown covers the run up to {when} s, where the profiler's own budget ended the detail"
            f"{'; the peak is the allocator counter over the whole run' if counted else after}; a later "
            f"moment may have been higher (--budget raises the budget)."
        )
    if (
        peak is not None
        and device is not None
        and peak.device == device.name
        and device.peak_bytes > peak.bytes + max(MiB, peak.bytes // 50)
    ):
        return (
            f"The peak is the allocator's own counter over the whole run; the breakdown is of the highest "
            f"moment the detail recorded ({fmt_bytes(peak.bytes)}, {span})."
        )
    return None


def _after_last_step(profile: Profile, detailed: list[StepStat]) -> list[Note]:
    """Work after the last training step (an evaluation, a final larger batch)
    is no step: compare its resident memory with the detailed steps'."""
    host = profile.process_device
    tl = profile.timeline(host.name) if host else None
    end = profile.steps[-1].t_end
    if tl is None or not detailed:
        return []
    after = [v for t, v in zip(tl.t, tl.live_bytes) if t > end]
    # Against every step: resident memory a leak grew stays high after the last step.
    top_detail = max((s.rss_peak_bytes or 0) for s in profile.steps)
    if not after or max(after) <= top_detail + max(ABOVE_BYTES, top_detail // 20):
        return []
    return [
        Note(
            "step_above_detail",
            f"after the last training step (step {profile.steps[-1].index}) the cell peaked "
            f"above every step (resident memory {fmt_bytes(max(after))} against "
            f"{fmt_bytes(top_detail)}), outside the detail: --detail-steps all records it",
            rerun(profile, "--detail-steps all"),
        )
    ]


def _growth(profile: Profile) -> Note | None:
    """End-of-step memory rising steadily (analysis/growth.py), with what keeps it."""
    growth = measured_growth(profile)
    found = culprits(profile, growth)
    if growth is None:
        # What the steps' ends measure can miss it (oneDNN's CPU allocator counts no block under
        # 256 KiB): a container that gained a value per step holding real memory is the finding.
        held = [c for c in found if c.container.bytes + c.container.graph_bytes >= GROWTH_BYTES]
        if not held:
            return None
        c = held[0]
        per_step = (c.container.bytes + c.container.graph_bytes) // max(1, c.container.added)
        return Note(
            "step_growth",
            f"+{fmt_bytes(per_step)} per step kept: {describe(c)} (the steps' end figures "
            f"did not show it) (the suggestion kept_per_step has the code that frees it)",
        )
    span = growth.last_step - growth.first_step + 1
    message = (
        f"+{fmt_bytes(growth.per_step)} per step since step {growth.first_step}: {growth.source} at the end "
        f"of each step rose from {fmt_bytes(growth.first_bytes)} to {fmt_bytes(growth.last_bytes)} over "
        f"{span} steps"
    )
    if found:
        message += "; " + "; ".join(describe(c) for c in found[:3])
        explained = sum(c.container.bytes + c.container.graph_bytes for c in found) // max(1, len(profile.steps))
        if explained < growth.per_step // 2:
            message += (
                f" (~{fmt_bytes(growth.per_step - explained)} a step more is kept by something no list, "
                f"dict or deque of the notebook's variables holds)"
            )
        return Note("step_growth", message + " (the suggestion kept_per_step has the code that frees it)")
    if "namespace" not in profile.capture.get("collectors", "").split(","):  # an imported or older profile
        suspect = _kept_per_step(profile)
        return Note(
            "step_growth",
            message
            + (f"; something keeps memory per step ({suspect})" if suspect else "; something keeps memory per step"),
        )
    return Note(
        "step_growth",
        message + "; no list, dict or deque of the notebook's variables gained it: an "
        "object's attribute, a closure, a function's own list or a reference cycle keeps it",
    )


def _kept_per_step(profile: Profile) -> str:
    """Where the namespace's containers were not looked at: a line of the
    cell that appends a value made in the loop to a list that outlives it
    (`losses.append(loss)`), the usual way a step keeps a tensor."""
    cell = CellCode(profile.source)
    for call in cell.calls_named("append", "extend"):
        node = call.node
        if node is None or not call.receiver or not node.args:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Name) and arg.id in cell.bound:
            return (
                f"line {call.line}: {call.func}({arg.id}) keeps each step's {arg.id}; "
                f"append {arg.id}.item() or {arg.id}.detach() instead"
            )
    return ""
