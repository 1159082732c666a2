"""Suggestions' estimates as measurements: each suggestion's own code applied to the
cell as "Insert fix" would (whatif/apply.py), and the cell re-executed on fake tensors
with and without it; the saving is the difference of the two peaks.

Where the engine cannot run the code (a template such as sdpa's q, k, v; a data-dependent
op; an iterator the cell reads), the rule's replay estimate stays and the suggestion says
which made it. A suggestion whose code saves nothing when run is dropped: a rule that
fires must be right. The engine's time is bounded (TIME_BUDGET_S): past it, the rest
keep their replay estimates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from memprofile.model.profile import Note, Profile, Suggestion
from memprofile.units import fmt_bytes
from memprofile.whatif.apply import applied
from memprofile.whatif.engine import FakeRun, StepSource, fake_run


#: Seconds the estimates may take after a cell (the base run included); the environment's
#: MEMPROFILE_WHATIF_BUDGET_S sets another (the tests and benchmarks: results, not the load).
def _budget_from_environment(default: float = 5.0) -> float:
    try:
        value = float(os.environ.get("MEMPROFILE_WHATIF_BUDGET_S", default))
    except ValueError:
        return default  # a malformed setting must not cost the profile
    return value if value >= 0 else default


TIME_BUDGET_S = _budget_from_environment()
#: How far a fake run's peak may be from the measured one for it to stand for the run.
AGREEMENT = 0.10
#: ... and at least this many bytes: a small run's allocator bookkeeping is no disagreement.
AGREEMENT_FLOOR = 1 << 20
#: Rules the engine leaves to their replay: zero_grad's saving is when the gradients die, which
#: the replay reads off the recorded timeline exactly (autoencoder_train: replay 8.50 MiB, the
#: code 8.50, the fake run 6.50, measured before the fake models carried the notebook's gradients).
#: kept_per_step's saving is what the steps keep one after another, which a fake run that stops
#: after its first step cannot see (its replay counts the kept objects' bytes exactly).
REPLAY_RULES = frozenset({"zero_grad_set_to_none", "kept_per_step"})
#: Rules whose code frees what the notebook keeps rather than lowering a run's peak.
FREES = frozenset({"notebook_leak"})
FAKE = "fake execution"


#: An estimate measures the second run of the cell (as is, or changed), as tests/fixes measures
#: a fix: by then it has what its first run made, not what the old cell left.
WARM = True


def base_run(profile: Profile, source: StepSource, warm: bool = False) -> FakeRun:
    """The cell re-executed as it is (kept on the profile: predictions and estimates reuse it)."""
    cache = profile.__dict__.setdefault("_fake_bases", {})
    if warm not in cache:
        cache[warm] = fake_run(source, warm=warm)
    return cache[warm]


def measured_peak(profile: Profile) -> int:
    """The torch allocator's measured peak (the device a fake run stands for)."""
    device = profile.peak_device
    return device.peak_bytes if device is not None and device.kind == "allocator" else profile.peak_bytes


def others_bytes(profile: Profile, base: FakeRun) -> int:
    """What the measured run started with beyond the fake copies: the notebook's tensors the
    cell does not use (the profiler's baseline is the whole namespace's)."""
    device = profile.peak_device
    baseline = device.baseline_bytes if device is not None and device.kind == "allocator" else 0
    return max(0, baseline - base.start_bytes)


def climb_gap(profile: Profile, base: FakeRun) -> int:
    """How much more the measured run held at its peak than the fake run, the notebook's other
    tensors aside: the kernels' own buffers the fake run does not see (a CPU LSTM's workspace,
    a convolution's backward copy)."""
    return measured_peak(profile) - base.peak_bytes - others_bytes(profile, base)


def disagrees(profile: Profile, base: FakeRun) -> str | None:
    """Why the fake run cannot stand for the measured one: their peaks (the notebook's other
    tensors aside) differ by more than AGREEMENT of the measured peak."""
    real, gap = measured_peak(profile), climb_gap(profile, base)
    if abs(gap) > max(AGREEMENT * real, AGREEMENT_FLOOR):
        return (
            f"re-executed on fake tensors the cell peaks at {fmt_bytes(base.peak_bytes)}, the measured run "
            f"at {fmt_bytes(base.peak_bytes + gap)} (the notebook's other tensors aside): its kernels hold "
            "memory the fake run does not see"
        )
    return None


@dataclass(frozen=True)
class Outcome:
    """What the engine made of one suggestion: measured (`peaks`: the cell's fake peak as is and
    with the code), saves nothing (`drop`), or left to the rule's replay (`why`, or nothing to say)."""

    peaks: tuple[int, int] | None = None
    drop: bool = False
    why: str | None = None
    failed: str | None = None


#: Shapes of one code site (a decorated function, a block in a function) whose estimates a site
#: keeps: past them its later profiles keep their replays (a site called with ever new shapes).
SITE_SHAPES = 8


def estimate_suggestions(
    profile: Profile,
    budget_s: float | None = None,
    unrun: str | None = None,
    memo: dict | None = None,
) -> None:
    """Each suggestion's estimate measured by the engine where it can run; every estimate
    left to its rule's replay says so, and why (`unrun`: why the engine did not run at all).
    `memo`: a code site's outcomes by the shapes of its arguments (whatif/call.py): a decorated
    step called once per training step is measured at its first call, and its later calls with
    the same shapes and objects take those outcomes instead of running the engine again."""
    budget_s = TIME_BUDGET_S if budget_s is None else budget_s
    source: StepSource | None = getattr(profile, "_step_source", None)
    if source is None or not profile.suggestions or unrun is not None:
        say_replayed(profile.suggestions, unrun or "this run's code is not re-executed")
        return
    key = source.bindings.signature() if memo is not None and source.bindings is not None else None
    if key is not None and memo is not None and key in memo:
        _take(profile, memo[key])
        return
    if key is not None and memo is not None and len(memo) >= SITE_SHAPES:
        say_replayed(profile.suggestions, f"the engine measured this code at {SITE_SHAPES} shapes already")
        return
    started = time.perf_counter()
    base = base_run(profile, source, WARM)
    why = base.error if not base.ok else disagrees(profile, base)
    if why is not None:
        profile.warnings.append(Note("whatif_failed", f"estimates are the rules' replays: {why}"))
        say_replayed(profile.suggestions, "the cell did not run on fake tensors as it ran (see the notes)")
        return
    outcomes: dict[tuple[str, str], Outcome] = {}
    for n, s in enumerate(profile.suggestions):
        if time.perf_counter() - started > budget_s:
            profile.warnings.append(
                Note("whatif_budget", f"the what-if engine stopped after {budget_s:g} s: later estimates are replays")
            )
            say_replayed(profile.suggestions[n:], f"the what-if engine stopped after {budget_s:g} s")
            key = None  # not all measured: the next call measures again
            break
        outcomes[s.id, s.code] = _measured(s, source, base)
    _take(profile, outcomes)
    if key is not None and memo is not None:
        memo[key] = outcomes
    profile.capture["whatif_s"] = f"{time.perf_counter() - started:.3f}"


def _take(profile: Profile, outcomes: dict[tuple[str, str], Outcome]) -> None:
    """The outcomes applied to the profile's suggestions (those without one keep their replays)."""
    kept = []
    for s in profile.suggestions:
        o = outcomes.get((s.id, s.code))
        if o is None:
            kept.append(s)
            continue
        if o.drop:
            continue
        kept.append(s)
        if o.peaks is not None:
            replayed = s.estimated_saving_bytes
            s.estimated_saving_bytes = o.peaks[0] - o.peaks[1]
            s.estimate_method = FAKE
            s.evidence = _then(
                s.evidence,
                f" Estimated by re-executing the cell with this code on fake tensors (no memory, no compute): "
                f"peak {fmt_bytes(o.peaks[0])} -> {fmt_bytes(o.peaks[1])}"
                + (f"; the recorded run's replay said {fmt_bytes(replayed)}." if replayed is not None else "."),
            )
        elif o.failed is not None:
            s.evidence = _then(
                s.evidence, f" (Estimated from the recorded run: its code could not run on fake tensors: {o.failed}.)"
            )
        elif o.why is not None:
            say_replayed([s], o.why)
    profile.suggestions = kept


def say_replayed(suggestions: list[Suggestion], why: str) -> None:
    """The evidence of each estimate made by its rule's replay says so, once."""
    for s in suggestions:
        if s.estimate_method == "replay" and "Estimated " not in s.evidence:
            s.evidence = _then(s.evidence, f" (Estimated from the recorded run's timeline: {why}.)")


def _measured(s: Suggestion, source: StepSource, base: FakeRun) -> Outcome:
    """The suggestion's code run on fake tensors with the cell, against the cell as is."""
    if not s.code.strip():
        return Outcome()
    if s.id in FREES:
        return Outcome(why="the bytes its code frees")
    if s.id in REPLAY_RULES:
        return Outcome(why="read off the recorded steps, which a fake run of one step does not make")
    if s.placement == "top" or s.restart_kernel:
        return Outcome(why="its code runs before the notebook's other cells")
    if _template(s.code):
        return Outcome(why="its code is a template for your own lines")  # `...` where they go: not runnable
    change = applied(s, source.source)
    if not change.before and _same_code(change.cell, source.source):
        return Outcome(why="its code is a template for your own lines")  # what to change is in its comments
    run = fake_run(source, source=change.cell, before=change.before, warm=WARM)
    if not run.ok:
        return Outcome(failed=run.error)
    if base.peak_bytes - run.peak_bytes <= 0:
        return Outcome(drop=True)  # a rule that fires must be right
    return Outcome(peaks=(base.peak_bytes, run.peak_bytes))


def _then(evidence: str, sentence: str) -> str:
    """The evidence with a sentence after it: a rule's evidence may end without its full stop."""
    evidence = evidence.rstrip()
    return (evidence + "." if evidence and evidence[-1] not in ".!?)" else evidence) + sentence


def _template(code: str) -> bool:
    """Code with a `...` statement standing for the user's own lines: run as it is, it
    changes nothing and would measure no saving."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and n.value.value is Ellipsis
        for n in ast.walk(tree)
    )


def _same_code(a: str, b: str) -> bool:
    """The same statements, comments, layout and imports aside."""
    import ast

    def body(text: str) -> list[str]:
        return [ast.dump(n) for n in ast.parse(text).body if not isinstance(n, ast.Import | ast.ImportFrom)]

    try:
        return body(a) == body(b)
    except SyntaxError:
        return False
