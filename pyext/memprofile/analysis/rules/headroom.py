"""A warning, not a fix: a run that peaks above 85 % of its device leaves no
room for a longer sequence, a larger batch or the allocator's caching."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

LIMIT = 0.85

CODE = """\
# Check the room left before the next run (CUDA: free and total bytes of the device)
import torch
free, total = torch.cuda.mem_get_info()
print(f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")"""

HOST_CODE = """\
# Check the room left before the next run
import psutil
print(psutil.virtual_memory())"""


def check(f: Facts) -> Suggestion | None:
    tight = [
        (d, d.capacity_bytes)
        for d in f.profile.devices
        if d.capacity_bytes and d.peak_bytes >= LIMIT * d.capacity_bytes
    ]
    if not tight:
        return None
    d, capacity = max(tight, key=lambda dc: dc[0].peak_bytes / dc[1])
    left = capacity - d.peak_bytes
    evidence = (
        f"{d.name} peaked at {fmt_bytes(d.peak_bytes)} of {fmt_bytes(capacity)} "
        f"({100 * d.peak_bytes / capacity:.0f} %): {fmt_bytes(max(0, left))} left; "
        f"keep 15-20 % free (smaller batch, mixed precision, checkpointing)"
    )
    return Suggestion(
        id="headroom",
        title=f"Less than 15 % of {d.name} is left at the peak",
        evidence=evidence,
        code=CODE if d.name.startswith("cuda") else HOST_CODE,
    )
