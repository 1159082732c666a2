"""Gradients of the previous step still held while the next forward runs:
`zero_grad(set_to_none=False)` (or zeroing after forward) keeps them.

Estimate: the peak without the held gradients at forward and backward
points. With `set_to_none=True` they do not exist during forward; during
backward each new gradient becomes `.grad` instead of a temporary added into
the old one, so the bytes in flight are about the same as without the stale
ones (measured on an MLP with SGD: estimate 32 MiB, saving 26 MiB).
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import PHASES, Suggestion
from memprofile.units import fmt_bytes

CODE = """\
# Free the gradients once the step is done, not just zero them:
opt.zero_grad(set_to_none=True)   # right after opt.step(), or before the forward
# (model.zero_grad(set_to_none=True) for gradients without an optimizer)"""


def _peak_without_stale(f: Facts) -> int:
    """Stale gradients are those alive at forward points (backward has not
    made this step's yet); with set_to_none they would not be there."""
    tl = f.timeline
    grads = tl.by_category.get("gradient") if tl else None
    if tl is None or not grads or not tl.phase:
        return f.peak_bytes
    forward, backward, optimizer = (PHASES.index(p) for p in ("forward", "backward", "optimizer"))
    # A point's phase is its block's: a forward block freed during backward
    # makes a "forward" point there. Only forward points before the step's
    # first backward point (after the last optimizer step) count.
    stale, before_backward = 0, True
    for g, ph in zip(grads, tl.phase):
        if ph == backward:
            before_backward = False
        elif ph == optimizer:
            before_backward = True
        elif ph == forward and before_backward:
            stale = max(stale, g)
    if not stale:
        return f.peak_bytes
    best = 0
    for live, g, ph in zip(tl.live_bytes, grads, tl.phase):
        if ph in (forward, backward):
            live -= min(g, stale)
        best = max(best, live)
    return min(f.peak_bytes, best)


def check(f: Facts) -> Suggestion | None:
    if f.framework != "torch" or not f.trained:
        return None
    held = f.at_peak("gradient")
    if not held or f.peak is None:
        return None
    saving = max(0, f.peak_bytes - _peak_without_stale(f))
    if not f.worth_it(saving):
        return None
    evidence = (f"{fmt_bytes(held)} of gradients from the previous step are alive at the "
                f"{fmt_bytes(f.peak_bytes)} peak, before this step's backward makes new ones")
    return Suggestion(id="zero_grad_set_to_none", title="Free gradients between steps (zero_grad(set_to_none=True))",
                      evidence=evidence, code=CODE, estimated_saving_bytes=saving)
