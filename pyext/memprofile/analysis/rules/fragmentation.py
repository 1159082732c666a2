"""CUDA caching-allocator fragmentation: memory reserved from the driver but
not handed out (split blocks no request fits) shows as reserved >> allocated
and as allocation retries; expandable segments let the allocator grow blocks
in place instead."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_WASTE = 256 << 20
MIN_SHARE = 0.2

CODE = """\
import os

# Before torch initialises CUDA: at the top of the notebook, after a kernel restart.
os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
import torch"""


def check(f: Facts) -> Suggestion | None:
    worst = None
    for d in f.profile.devices:
        s = d.allocator_stats
        if not d.name.startswith("cuda") or not s.get("reserved_peak_bytes"):
            continue
        waste = s["reserved_peak_bytes"] - s.get("allocated_peak_bytes", 0)
        retries = s.get("alloc_retries", 0)
        if (waste >= MIN_WASTE and waste >= MIN_SHARE * s["reserved_peak_bytes"]) or retries:
            if worst is None or waste > worst[1]:
                worst = (d, waste, retries)
    if worst is None:
        return None
    d, waste, retries = worst
    s = d.allocator_stats
    evidence = (
        f"{d.name}: the allocator reserved up to {fmt_bytes(s['reserved_peak_bytes'])} for at most "
        f"{fmt_bytes(s.get('allocated_peak_bytes', 0))} of tensors ({fmt_bytes(waste)} reserved but unused)"
    )
    if retries:
        evidence += f"; {retries} allocation(s) had to free cached blocks and retry"
    return Suggestion(
        id="fragmentation",
        title="Let the CUDA allocator expand segments (less fragmentation)",
        evidence=evidence,
        code=CODE,
        placement="top",
        restart_kernel=True,
        estimated_saving_bytes=max(0, waste),
    )
