"""What the training steps say: which were recorded in detail and why the
detail ended, a step that peaked above every detailed one, and memory that
grows step after step (a tensor kept per step)."""

from __future__ import annotations

import ast

from memprofile.analysis.cell import CellCode
from memprofile.model.profile import Note, Profile, StepStat
from memprofile.units import fmt_bytes, step_runs

MiB = 1 << 20
#: A step is "above" the detailed ones by this much (and 5 %).
ABOVE_BYTES = 16 * MiB
#: Growth per run of steps that is a finding, and the steps it needs.
GROWTH_BYTES = 16 * MiB
MIN_GROWTH_STEPS = 6


def _peak(s: StepStat) -> int | None:
    return s.peak_bytes if s.peak_bytes is not None else s.rss_peak_bytes


#: The codes of the notes step_notes writes (analyse replaces them when it runs again).
STEP_NOTE_CODES = frozenset({"budget_reached", "detail_steps", "detail_late", "step_above_detail", "step_growth"})


def step_notes(profile: Profile) -> list[Note]:
    notes = []
    steps = profile.steps
    # Why and when the framework's profiler stopped recording (torch's or TF's collector).
    why = profile.capture.get("torch_detail_why") or profile.capture.get("tf_detail_why")
    when = profile.capture.get("torch_detail_end_s") or profile.capture.get("tf_detail_end_s", "?")
    if why == "budget":
        where = f"during step {next((s.index for s in steps if not s.detailed), len(steps) + 1)}" if steps \
            else f"at {when} s"
        notes.append(Note("budget_reached",
                          f"the profiler's own memory neared its budget ({profile.capture.get('budget', '?')}) "
                          f"{where}: op, layer and kind detail ends there (the peak, ops and layers cover the run "
                          f"up to then); the rest is measured by the process's resident memory (--budget raises it)",
                          _budget_fix(profile)))
    if not steps:
        return notes
    detailed = [s for s in steps if s.detailed]
    cheap = [s for s in steps if not s.detailed]
    exact = all(s.peak_bytes is not None for s in steps)
    if exact:
        source = "the allocator's own counters"
    elif "each step" in profile.capture.get("host_peak_from", ""):
        grouped = any(s.rss_peak_first for s in cheap)
        source = (f"the process's resident memory (the OS high-water mark, exact"
                  f"{'; short steps read in groups' if grouped else ''})")
    else:
        source = "the process's resident memory samples"
    if cheap and detailed and why != "budget":
        notes.append(Note("detail_steps", f"{_span(detailed)} of {len(steps)} recorded in detail (ops, layers, "
                          f"kinds); {_span(cheap)} by their boundaries, each one's peak from {source} "
                          f"(--detail-steps N, A-B or all records others)"))
        if detailed[0].index > 1:
            notes.append(Note("detail_late", f"memory made before step {detailed[0].index} counts as from before "
                              f"the detail; what no model, optimizer or variable holds is not counted in it"))
    notes.extend(_above_detail(profile, detailed, cheap, exact))
    if cheap:
        notes.extend(_after_last_step(profile, detailed))
    growth = _growth(steps, exact, profile)
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


def _above_detail(profile: Profile, detailed: list[StepStat], cheap: list[StepStat], exact: bool) -> list[Note]:
    if not detailed or not cheap:
        return []
    # Like with like: exact peaks where every step has one, else resident memory for all.
    value = _peak if exact else (lambda s: s.rss_peak_bytes)
    top_detail = max((value(s) or 0) for s in detailed)
    highest = max((value(s) or 0) for s in cheap)
    # The first step that reached it: resident memory freed by a step stays
    # with the process (glibc keeps it), so the steps after look as high.
    worst = next(s for s in cheap if (value(s) or 0) >= highest - max(MiB, highest // 100))
    peak = value(worst) or 0
    if peak <= top_detail + max(ABOVE_BYTES, top_detail // 20):
        return []
    what = "peak" if exact else "resident memory"
    # Short steps are read in groups: the mark then names the group, not one step.
    first = (None if exact else worst.rss_peak_first) or worst.index
    which = f"step {worst.index}" if first == worst.index else f"one of steps {first}-{worst.index}"
    return [Note("step_above_detail", f"{which} peaked above every detailed step ({what} "
                 f"{fmt_bytes(peak)} against {fmt_bytes(top_detail)}): --detail-steps {first}-{worst.index} "
                 f"records {'it' if first == worst.index else 'them'} in detail",
                 rerun(profile, f"--detail-steps {first}-{worst.index}"))]


def _after_last_step(profile: Profile, detailed: list[StepStat]) -> list[Note]:
    """Work after the last training step (an evaluation, a final larger batch)
    is no step: compare its resident memory with the detailed steps'."""
    host = profile.process_device
    tl = profile.timeline(host.name) if host else None
    end = profile.steps[-1].t_end
    if tl is None or not detailed:
        return []
    after = [v for t, v in zip(tl.t, tl.live_bytes) if t > end]
    top_detail = max((s.rss_peak_bytes or 0) for s in detailed)
    if not after or max(after) <= top_detail + max(ABOVE_BYTES, top_detail // 20):
        return []
    return [Note("step_above_detail", f"after the last training step (step {profile.steps[-1].index}) the cell peaked "
                 f"above every detailed step (resident memory {fmt_bytes(max(after))} against "
                 f"{fmt_bytes(top_detail)}), outside the detail: --detail-steps all records it",
                 rerun(profile, "--detail-steps all"))]


def _growth(steps: list[StepStat], exact: bool, profile: Profile) -> Note | None:
    """End-of-step memory rising steadily from the second step on (the first
    makes the optimizer's state and the allocator's caches); on CPU by the
    heap's bytes in use (resident memory where that is unknown: it misses
    what a heap reusing freed pages keeps), over the steps after the detail."""
    # Resident memory grows with torch's event buffers while a step is recorded
    # in detail: only the steps after the detail tell the cell's own growth.
    after = [s for s in steps[1:] if exact or not s.detailed]
    # Short steps are read in groups (capture/host.py StepFigures): the steps read.
    heap = not exact and any(s.heap_end_bytes is not None for s in after)
    read = [(s.index, s.end_bytes if exact else s.heap_end_bytes if heap else s.rss_end_bytes) for s in after]
    values = [(i, v) for i, v in read if v is not None]
    if len(values) < MIN_GROWTH_STEPS:
        return None
    first, last = values[0][1], values[-1][1]
    grown = last - first
    rises = sum(1 for (_, a), (_, b) in zip(values, values[1:]) if b >= a)
    half = len(values) // 2
    early, late = values[half][1] - first, last - values[half][1]
    if grown < GROWTH_BYTES or rises < 0.8 * (len(values) - 1) or late < 0.3 * max(early, 1):
        return None
    per_step = grown // (values[-1][0] - values[0][0])
    what = "live bytes" if exact else "the heap's bytes in use" if heap else "resident memory"
    span = values[-1][0] - values[0][0] + 1
    message = (f"+{fmt_bytes(per_step)} per step since step {values[0][0]}: {what} at the end of each step rose "
               f"from {fmt_bytes(first)} to {fmt_bytes(last)} over {span} steps; something keeps memory per step")
    suspect = _kept_per_step(profile)
    if suspect:
        message += f" ({suspect})"
    return Note("step_growth", message)


def _kept_per_step(profile: Profile) -> str:
    """A line of the cell that appends a value made in the loop to a list that
    outlives it (`losses.append(loss)`): the usual way a step keeps a tensor
    and its autograd graph."""
    cell = CellCode(profile.source)
    for call in cell.calls_named("append", "extend"):
        node = call.node
        if node is None or not call.receiver or not node.args:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Name) and arg.id in cell.bound:
            return (f"line {call.line}: {call.func}({arg.id}) keeps each step's {arg.id}; "
                    f"append {arg.id}.item() or {arg.id}.detach() instead")
    return ""
