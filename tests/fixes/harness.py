"""Apply a suggestion's own code the way "Insert fix" would, and measure what it saves.

Shared by tests/fixes/ and benchmarks/suggestion_accuracy.py. The code comes
from the rule at run time (`code`, `placement`, `estimated_saving_bytes`),
never from a copy of it. How it is applied is decided from the code:

- "replaces": the code holds the cell's own lines (autocast, inference_mode
  wrap them), so it is the new cell;
- "edits": every statement of the code is a call the cell already makes (the
  same callee, e.g. `sgd.zero_grad(...)`) with other arguments: that call in
  the cell is replaced;
- "below": the code runs as a new cell below the profiled one, then the cell
  runs again;
- "top": a fresh namespace, the code first, then the notebook from the top;
- "by hand": the code is a template (sdpa's q, k, v); the workload applies
  the change it describes.

Both profiles start from the same state: the notebook's setup, then the cell
(as is, or fixed) once unprofiled, so optimizer state, gradients and the
globals the cell rebinds exist in both runs. The saving is the peak before
minus the peak after, on the device the first profile peaked on.
notebook_leak's code frees memory instead of lowering a peak: what it frees
is read from the c10 allocator's own alloc/free events while its code runs.
"""

from __future__ import annotations

import gc
import importlib
from dataclasses import dataclass

import memprofile
from memprofile.model.profile import Profile, Suggestion
from memprofile.whatif.apply import edited_cell  # noqa: F401 (the harness's name for it)
from memprofile.whatif.apply import mode_of as apply_mode_of

#: The issue's bar: the measured saving is within 25 % of the estimate.
BAR = 0.25
#: Rules whose code frees what the notebook keeps, rather than lowering a peak.
FREES = ("notebook_leak",)


class CellFailed(RuntimeError):
    """A cell raised: its exception, as IPython reported it."""


@dataclass
class Measurement:
    workload: str
    rule: str  # module under analysis/rules/
    fired: bool
    id: str | None = None
    estimate: int | None = None
    mode: str | None = None
    device: str | None = None
    peak_before: int | None = None
    peak_after: int | None = None
    measured: int | None = None
    #: The fix's code raised (NameError: a name the notebook does not have, ...).
    failed: str | None = None
    #: What the workload expects of the rule: "fires", "quiet" or "either" (the benchmark's report).
    expected: str = "either"

    @property
    def error(self) -> float | None:
        """(estimate - measured) / measured: + the estimate claims more than the fix saves."""
        if self.estimate is None or self.measured is None:
            return None
        return (self.estimate - self.measured) / self.measured if self.measured else float("inf")

    @property
    def within_bar(self) -> bool:
        return (
            self.failed is None
            and self.measured is not None
            and self.estimate is not None
            and abs(self.measured - self.estimate) <= BAR * self.estimate
        )

    def describe(self) -> str:
        from memprofile.units import fmt_bytes

        if not self.fired:
            return f"{self.rule} on {self.workload}: did not fire"
        if self.failed:
            return f"{self.rule} on {self.workload} ({self.mode}): its code raised {self.failed}"
        head = (
            f"{self.rule} on {self.workload} ({self.mode}): estimate {fmt_bytes(self.estimate)} ({self.estimate} B), "
        )
        if self.rule in FREES:
            return head + f"its code frees {fmt_bytes(self.measured)} ({self.measured} B) on {self.device}"
        return (
            head + f"the fix saves {fmt_bytes(self.measured)} ({self.measured} B) on {self.device}; peak "
            f"{fmt_bytes(self.peak_before)} -> {fmt_bytes(self.peak_after)}"
        )


# -- running cells -------------------------------------------------------------
def shell():
    """An IPython shell with the extension loaded (the tests' `ip` fixture, for scripts)."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython() or TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "memprofile")
    return ip


def run(ip, code: str) -> None:
    result = ip.run_cell(code)
    error = result.error_before_exec or result.error_in_exec
    if error is not None:
        raise CellFailed(f"{type(error).__name__}: {error}")


def profile(ip, code: str, name: str) -> Profile:
    run(ip, f"%%memprofile -q -n '{name}'\n{code}")
    return memprofile.last()


def fresh(ip) -> None:
    """An empty namespace, as after a kernel restart (the process stays)."""
    ip.run_line_magic("reset", "-f")
    gc.collect()


def warm(ip, setup: str, cell: str) -> None:
    """The notebook's setup, then the cell once: the state both profiles start from."""
    fresh(ip)
    run(ip, setup)
    run(ip, cell)


def suggestion_of(p: Profile, rule: str) -> Suggestion | None:
    """What `rule` (its module) suggests for this profile, as the user sees it."""
    from memprofile.analysis.rules.facts import Facts

    made = importlib.import_module(f"memprofile.analysis.rules.{rule}").check(Facts(p))
    if made is None:
        return None
    shown = next((s for s in p.suggestions if s.id == made.id), None)
    if shown is None and "whatif_s" in p.capture:
        return None  # the what-if engine ran its code and it saved nothing: the user never sees it
    return shown or made


# -- deciding how the code applies: as the what-if engine does (whatif/apply.py) --
def mode_of(s: Suggestion, cell: str, by_hand: dict[str, str], rule: str) -> str:
    return "by hand" if rule in by_hand else apply_mode_of(s, cell)


# -- measuring -----------------------------------------------------------------
_before: dict[tuple[int, str], Profile] = {}


def before(ip, workload) -> Profile:
    """The workload's cell profiled as it is (once per shell and workload)."""
    key = (id(ip), workload.name)
    if key not in _before:
        warm(ip, workload.setup, workload.cell)
        _before[key] = profile(ip, workload.cell, f"{workload.name} (as is)")
    return _before[key]


def measure(ip, workload, rule: str) -> Measurement:
    p = before(ip, workload)
    s = suggestion_of(p, rule)
    if s is None:
        return Measurement(workload.name, rule, fired=False)
    m = Measurement(
        workload.name,
        rule,
        fired=True,
        id=s.id,
        estimate=s.estimated_saving_bytes,
        mode=mode_of(s, workload.cell, workload.by_hand, rule),
    )
    try:
        if rule in FREES:
            m.device, m.measured = freed_by(ip, workload, s.code)
            return m
        after = _after(ip, workload, s, m.mode, rule)
    except CellFailed as exc:
        m.failed = str(exc)
        return m
    device = p.peak_device
    m.device, m.peak_before = device.name, device.peak_bytes
    m.peak_after = after.device(device.name).peak_bytes
    m.measured = m.peak_before - m.peak_after
    return m


def _after(ip, workload, s: Suggestion, mode: str, rule: str) -> Profile:
    name = f"{workload.name} ({s.id})"
    if mode == "replaces":
        warm(ip, workload.setup, s.code)
        return profile(ip, s.code, name)
    if mode == "edits":
        cell = edited_cell(s.code, workload.cell)
        warm(ip, workload.setup, cell)
        return profile(ip, cell, name)
    fresh(ip)
    if mode == "top":
        run(ip, s.code)
        run(ip, workload.setup)
    else:
        run(ip, workload.setup)
        run(ip, workload.by_hand[rule] if mode == "by hand" else s.code)
    run(ip, workload.cell)
    return profile(ip, workload.cell, name)


def freed_by(ip, workload, code: str) -> tuple[str, int]:
    """Bytes the c10 CPU allocator frees while `code` runs, after the cell ran
    once more under the same torch profiler (so it saw every block the cell
    left behind being made; blocks made before a profiler starts are not
    reported when freed)."""
    import torch
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity

    warm(ip, workload.setup, workload.cell)
    with torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(ip, workload.cell)
        with record_function("memprofile.fix"):
            run(ip, code)
            gc.collect()
    # memory events are folded into the op around them; the window's is
    # inclusive: every alloc (+) and free (-) made while the code ran
    window = next(e for e in prof.events() if e.name == "memprofile.fix")
    return "cpu", -window.cpu_memory_usage
