"""Gradients of the previous step still held while the next forward runs:
`zero_grad(set_to_none=False)` (or zeroing after forward) keeps them.

Estimate: the peak without the gradients at forward points (with
`set_to_none=True` they do not exist until backward makes them).
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

CODE = """\
# Free the gradients once the step is done, not just zero them:
opt.zero_grad(set_to_none=True)   # right after opt.step(), or before the forward
# (model.zero_grad(set_to_none=True) for gradients without an optimizer)"""


def check(f: Facts) -> Suggestion | None:
    if f.framework != "torch" or not f.trained:
        return None
    held = f.at_peak("gradient")
    if not held or f.peak is None:
        return None
    saving = f.saving_without({"gradient": 1.0}, in_phases={"forward"})
    if not f.worth_it(saving):
        return None
    evidence = (f"{fmt_bytes(held)} of gradients are alive at the {fmt_bytes(f.peak_bytes)} peak, during the "
                f"forward pass, before backward needs them")
    return Suggestion(id="zero_grad_set_to_none", title="Free gradients between steps (zero_grad(set_to_none=True))",
                      evidence=evidence, code=CODE, estimated_saving_bytes=saving)
