"""compare(a, b): what changed between two profiles, the differences that
matter first (peak, then kinds of memory, layers and ops by the size of
their change)."""

from __future__ import annotations

from dataclasses import dataclass, field

from memprofile.analysis.steps import later_peak
from memprofile.model.profile import CATEGORIES, Profile
from memprofile.units import category_label, fmt_bytes

#: Rows per table; the rest is counted.
MAX_ROWS = 15
#: Memory a run can leave behind for the next one to start with.
STATE_CATEGORIES = ("parameter", "gradient", "optimizer_state")


def peak_change_percent(saving_bytes: int, peak_before_bytes: int) -> float | None:
    """The one percentage of a measured change in peak, wherever it is shown
    (comparison heading, suggestion card, panel, widget): minus the saving
    over the peak of the run it was measured against. -17.0: 17 % less."""
    return -100.0 * saving_bytes / peak_before_bytes if peak_before_bytes else None


def state_created(p: Profile) -> dict[str, int]:
    """Bytes of state the run left that it did not start with, per category,
    summed over the devices that tell categories apart: an optimizer's first
    step creates its state, a first backward the gradients, a cell that builds
    its model the parameters. The next run starts with it, so a second run of
    the same code is not like the first."""
    created: dict[str, int] = {}
    for d in p.devices:
        timeline = p.timeline(d.name)
        if timeline is None or not timeline.by_category:
            continue
        for c in STATE_CATEGORIES:
            column = timeline.by_category.get(c)
            grown = (column[-1] if column else 0) - d.baseline_by_category.get(c, 0)
            if grown > 0:
                created[c] = created.get(c, 0) + grown
    return created


_STATE_NOUNS = {"parameter": "parameters", "gradient": "gradients"}


def state_text(created: dict[str, int]) -> str:
    """'4.00 MiB of gradients and 8.00 MiB of optimizer state'"""
    parts = [f"{fmt_bytes(b)} of {_STATE_NOUNS.get(c, category_label(c))}" for c, b in created.items()]
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


def _state_notes(a: Profile, b: Profile) -> list[str]:
    """A run that created state did not start like a run of the same code
    after it: say so next to the figures it skews."""
    return [
        f"{p.name!r} created {state_text(created)} during its run (it did not start with it)"
        for p in (a, b)
        if (created := state_created(p))
    ]


@dataclass
class Change:
    name: str
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class Comparison:
    a: Profile
    b: Profile
    peak: Change
    device: str
    duration_before_s: float
    duration_after_s: float
    categories: list[Change] = field(default_factory=list)
    layers: list[Change] = field(default_factory=list)
    ops: list[Change] = field(default_factory=list)
    devices: list[Change] = field(default_factory=list)
    more_layers: int = 0
    more_ops: int = 0
    #: What the reader must know to trust the figures (which runs were compared, and why).
    notes: list[str] = field(default_factory=list)

    @property
    def saving_bytes(self) -> int:
        """Peak before minus peak after: positive when b needs less."""
        return -self.peak.delta

    @property
    def peak_change_percent(self) -> float | None:
        return peak_change_percent(self.saving_bytes, self.peak.before)

    @property
    def time_change(self) -> float | None:
        """after / before - 1 (0.12: 12 % slower); None without a duration."""
        if not self.duration_before_s:
            return None
        return self.duration_after_s / self.duration_before_s - 1.0


def _ranked(before: dict[str, int], after: dict[str, int]) -> list[Change]:
    rows = [Change(k, before.get(k, 0), after.get(k, 0)) for k in {*before, *after}]
    rows = [r for r in rows if r.delta]
    rows.sort(key=lambda r: (-abs(r.delta), r.name))
    return rows


def _whole_run(p: Profile, device: str, detailed: int) -> tuple[int, str | None]:
    """The run's peak on `device` and, where a step outside the detail went
    above the detailed steps (analysis/steps.py later_peak: the allocator's
    counters, or on a CPU an estimate from the C heap), what to say of it. A
    leak across steps grows after the few detailed steps: their peak alone
    would compare a leaky run and its fix as alike."""
    later = later_peak(p) if p.peak_device is not None and p.peak_device.name == device else None
    if later is None or later[1] <= detailed:
        return detailed, None
    step, value, how = later
    figure = fmt_bytes(value) if how == "exact" else f"~{fmt_bytes(value)}, estimated from the C heap's growth"
    return value, (
        f"{p.name!r} peaked at step {step.index} ({figure}), above its detailed steps "
        f"({fmt_bytes(detailed)}): its peak compared is that step's; the kinds, layers and ops are the "
        f"detailed steps'"
    )


def compare(a: Profile, b: Profile) -> Comparison:
    """a is "before", b "after". Peaks are compared on a's peak device when b
    has it (the same allocator), else on each one's own peak device; a run's
    peak is its whole run's where a step after the detail went higher."""
    device = a.peak_device
    same = next((d for d in b.devices if device and d.name == device.name), None)
    if device is not None and same is not None:
        peak = Change(device.name, device.peak_bytes, same.peak_bytes)
    else:
        peak = Change(device.name if device else "-", a.peak_bytes, b.peak_bytes)
    before, before_note = _whole_run(a, peak.name, peak.before)
    after, after_note = _whole_run(b, peak.name, peak.after)
    peak = Change(peak.name, before, after)
    later_notes = [n for n in (before_note, after_note) if n]
    cat_a = a.peak.by_category if a.peak else {}
    cat_b = b.peak.by_category if b.peak else {}
    categories = [Change(c, cat_a.get(c, 0), cat_b.get(c, 0)) for c in CATEGORIES if cat_a.get(c, 0) or cat_b.get(c, 0)]
    layers = _ranked(a.peak.by_layer if a.peak else {}, b.peak.by_layer if b.peak else {})
    ops = _ranked(
        {f"{o.name} ({o.device})": o.allocated_bytes for o in a.ops},
        {f"{o.name} ({o.device})": o.allocated_bytes for o in b.ops},
    )
    devices = [
        Change(d.name, d.peak_bytes, next((e.peak_bytes for e in b.devices if e.name == d.name), 0)) for d in a.devices
    ]
    devices += [Change(e.name, 0, e.peak_bytes) for e in b.devices if e.name not in {d.name for d in a.devices}]
    return Comparison(
        a=a,
        b=b,
        peak=peak,
        device=peak.name,
        duration_before_s=a.duration_s,
        duration_after_s=b.duration_s,
        categories=categories,
        layers=layers[:MAX_ROWS],
        ops=ops[:MAX_ROWS],
        devices=devices,
        more_layers=max(0, len(layers) - MAX_ROWS),
        more_ops=max(0, len(ops) - MAX_ROWS),
        notes=later_notes + _state_notes(a, b),
    )
