"""What the framework advice tests share: in a fresh IPython shell (one process per
framework: their imports are heavy), profile a training cell, apply a suggestion's code
as "Insert fix" would (memprofile.whatif.apply: the edited cell, or the code run below
and then the cell again) and profile the cell again. Run as a script by the tests."""

from __future__ import annotations

import json

MiB = 2**20


def added(p) -> int:
    """The run's peak above what its device held when it began: what the cell's training
    took, the notebook's other tensors (an old trainer's optimizer, say) aside."""
    d = p.peak_device
    return d.peak_bytes - d.baseline_bytes


def profiled(ip, cell: str, name: str):
    import memprofile

    ip.run_cell("import gc as _gc; _gc.collect()")  # an old trainer's cycles freed before, not during, the run
    result = ip.run_cell(f"%%memprofile -q -n {name}\n{cell}")
    if result.error_in_exec is not None:
        raise RuntimeError(f"{name}: {result.error_in_exec!r}")
    return memprofile.last()


def near_capacity(p, share: float = 0.95) -> None:
    """The profile as if the machine's memory were `share` full at its peak (the batch
    rule speaks near the limit): the process's capacity set so."""
    host = p.process_device
    host.capacity_bytes = int((host.peak_bytes - p.peak_bytes) + p.peak_bytes / share)


def apply_and_measure(ip, cell: str, s, name: str) -> dict:
    """`s`'s code applied to `cell` as Insert fix would, the cell profiled again."""
    from memprofile.whatif.apply import applied

    change = applied(s, cell)
    if change.before:
        result = ip.run_cell(change.before)
        if result.error_in_exec is not None:
            raise RuntimeError(f"{name}: its code failed: {result.error_in_exec!r}\n{change.before}")
    after = profiled(ip, change.cell, name)
    return {"mode": change.mode, "after": added(after), "profile": after}


def report(before, s, measured: dict) -> dict:
    return {
        "id": s.id,
        "title": s.title,
        "code": s.code,
        "evidence": s.evidence,
        "estimate": s.estimated_saving_bytes,
        "before": added(before),
        "after": measured["after"],
        "saved": added(before) - measured["after"],
        "mode": measured["mode"],
    }


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result))
