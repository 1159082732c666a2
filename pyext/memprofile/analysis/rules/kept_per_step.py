"""A training loop that keeps something per step: a list, dict or deque of
the notebook's variables that gained a tensor (or array) at every step,
which grows the memory of every later step (analysis/growth.py). The code
keeps a number (`.item()`), drops the graph (`.detach()`), moves it off the
GPU (`.detach().cpu()`), or frees what the container holds."""

from __future__ import annotations

from memprofile.analysis.growth import culprits, describe, measured_growth
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes


def check(f: Facts) -> Suggestion | None:
    growth = measured_growth(f.profile)
    found = culprits(f.profile, growth)
    if not found:
        return None
    top = found[0]
    if not f.worth_it(top.saving_bytes):
        return None
    steps = len(f.profile.steps)
    evidence = f"over {steps} training steps {describe(top)}"
    if growth is not None:
        evidence += (
            f"; {growth.source} at the end of each step rose +{fmt_bytes(growth.per_step)} per step "
            f"(steps {growth.first_step}-{growth.last_step})"
        )
    evidence += f"; {top.code.split('#', 1)[0].strip()} {top.how}"
    return Suggestion(
        id="kept_per_step",
        title=f"Stop keeping each step's tensors in {top.container.name}",
        evidence=evidence,
        code=top.code,
        estimated_saving_bytes=top.saving_bytes,
    )
