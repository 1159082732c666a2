"""Memory a notebook keeps after the cell: arrays in IPython's output cache
(`Out[n]`, `_`), tensors that hold an autograd graph (and every activation
saved in it), large arrays the cell bound to variables (most of what it left
behind), and, on PyTorch, memory that grew in the cell and that no variable,
parameter, gradient or optimizer state accounts for (object attributes,
closures, reference cycles). Each is named, with its bytes and the code that
frees it."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_CACHE = 1 << 20
MIN_HIDDEN = 64 << 20
#: A variable the cell bound is named when it holds this much, and together
#: with the others at least GLOBAL_SHARE of what the cell left behind.
MIN_GLOBAL = 4 << 20
GLOBAL_SHARE = 0.25
HIDDEN_SHARE = 0.25
OWNED = ("parameter", "gradient", "optimizer_state")


def _hidden(f: Facts, graph_bytes: int) -> int:
    """Growth over the cell that nothing named accounts for (torch devices)."""
    d = f.device
    if f.framework != "torch" or d is None:
        return 0
    grown = d.end_bytes - d.baseline_bytes
    owned = sum(f.at_end(c) - d.baseline_by_category.get(c, 0) for c in OWNED)
    named = sum(k.bytes for k in f.profile.kept if k.new and k.device.split(":")[0] == d.name.split(":")[0])
    hidden = grown - max(0, owned) - named - graph_bytes
    return hidden if hidden >= MIN_HIDDEN and hidden >= HIDDEN_SHARE * grown else 0


def check(f: Facts) -> Suggestion | None:
    if f.profile.capture.get("script"):
        return None  # a whole script (memprofile run): its process ends and frees all it kept
    cached = [k for k in f.profile.kept if k.via == "output_cache"]
    cache_bytes = sum(k.bytes for k in cached)
    # Only graphs that still save tensors: after backward() a loss or logits
    # tensor keeps its grad_fn but nothing saved, and .detach() frees nothing.
    # Tensors of one graph share what it saves (loss's graph holds logits'):
    # the largest stands for them all. Graphs an earlier cell made are that
    # cell's advice, not this one's.
    graphs = [k for k in f.profile.kept if k.graph and k.graph_bytes and k.via == "variable" and k.new]
    graph_bytes = max((k.graph_bytes for k in graphs), default=0)
    hidden = _hidden(f, graph_bytes)
    bound = [k for k in f.profile.kept if k.new and k.via == "variable" and not k.graph and k.bytes >= MIN_GLOBAL]
    left = (f.device.end_bytes - f.device.baseline_bytes) if f.device else 0
    bound_bytes = sum(k.bytes for k in bound)
    if not bound or bound_bytes < GLOBAL_SHARE * left:
        bound, bound_bytes = [], 0
    found, code = [], []
    if cache_bytes >= MIN_CACHE:
        names = ", ".join(k.name for k in cached[:5]) + (f" and {len(cached) - 5} more" if len(cached) > 5 else "")
        found.append(f"IPython's output cache holds {fmt_bytes(cache_bytes)} ({names})")
        code.append("%reset -f out   # empties Out and _, __, ___ (the variables stay)")
    if graphs and graph_bytes:
        names = ", ".join(k.name for k in graphs[:5])
        found.append(f"{names} still hold{'s' if len(graphs) == 1 else ''} an autograd graph that saves "
                     f"{fmt_bytes(graph_bytes)} of activations for a backward that has not run")
        code.extend(f"{k.name} = {k.name}.detach()   # or .item() for a loss: frees the saved activations"
                    for k in graphs[:5])
    if bound:
        names = ", ".join(f"{k.name} ({fmt_bytes(k.bytes)})" for k in bound[:5])
        found.append(f"variables bound in the cell keep {fmt_bytes(bound_bytes)} alive after it: {names}")
        code.append("del " + ", ".join(k.name for k in bound[:5]) + "   # once they are no longer needed")
        if any(k.device.startswith("cuda") for k in bound):
            code.append("import torch\ntorch.cuda.empty_cache()   # hand the cached blocks back to the driver")
    if hidden:
        found.append(f"{fmt_bytes(hidden)} grew in the cell and is held by something no variable names "
                     f"(an object's attribute, a closure, a reference cycle)")
        code.append("import gc\ngc.collect()   # frees what only reference cycles hold")
    if not found:
        return None
    saving = cache_bytes + graph_bytes + hidden + bound_bytes
    if not f.worth_it(saving):
        return None
    return Suggestion(id="notebook_leak", title="Memory the notebook keeps after the cell", evidence="; ".join(found),
                      code="\n".join(code), estimated_saving_bytes=saving)
