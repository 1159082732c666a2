"""A forward-only cell that still records autograd graphs keeps every tensor
saved for a backward that never comes; `torch.inference_mode()` records none.

Estimate: the peak of the timeline without its activations (the tensors a
grad-enabled forward kept), plus the working set inference mode still needs:
an op's input and output live together, so the two largest activations at
the peak come back once.
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes


def check(f: Facts) -> Suggestion | None:
    if f.framework != "torch" or f.trained or f.stepped:
        return None
    if f.cell.under("inference_mode", "no_grad"):
        return None  # the cell already turns autograd off (what it keeps is not a graph)
    activation = f.at_peak("activation")
    largest = sorted((t.bytes for t in f.peak.tensors if t.category == "activation"), reverse=True)[:2]
    saving = f.saving_without({"activation": 1.0}, add_always=sum(largest))
    if not activation or not f.worth_it(saving):
        return None
    evidence = (f"the cell ran forward only (no backward, no optimizer step) with autograd on: "
                f"{fmt_bytes(activation)} ({f.share(activation)} of the peak) was kept for a backward that never ran")
    return Suggestion(
        id="inference_mode", title="Run forward-only code under torch.inference_mode()", evidence=evidence,
        code=f.cell_inside("import torch\n\nwith torch.inference_mode():"),
        estimated_saving_bytes=saving, can_try=True, try_change="inference_mode",
    )
