"""Memory a notebook keeps after the cell: arrays in IPython's output cache
(`Out[n]`, `_`), tensors that hold an autograd graph (and every activation
saved in it), large arrays the cell bound to variables (most of what it left
behind), and, on PyTorch, memory that grew in the cell and that no variable,
parameter, gradient or optimizer state accounts for (object attributes,
closures, reference cycles; after a cell that raised, its error's traceback).
Each is named, with its bytes and the code that frees it."""

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
#: Frees what a raised cell's traceback keeps: gc.collect() alone frees none
#: of it while sys and IPython's traceback formatter (kept for %debug) hold it.
RAISED_CODE = """\
import gc
import sys

sys.last_type = sys.last_value = sys.last_traceback = sys.last_exc = None
get_ipython().InteractiveTB.tb = None   # the traceback IPython keeps for %debug
gc.collect()   # the traceback, its frames and the exception refer to each other"""


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
    # Tensors of one graph share what it saves (loss's graph holds logits'),
    # others do not (four forwards' outputs): what they save together, each
    # storage once (graph_own_bytes). Graphs an earlier cell made are that
    # cell's advice, not this one's.
    graphs = [k for k in f.profile.kept if k.graph and k.graph_bytes and k.via == "variable" and k.new]
    graph_bytes = sum(k.graph_own_bytes for k in graphs)
    hidden = _hidden(f, graph_bytes)
    bound = [k for k in f.profile.kept if k.new and k.via == "variable" and not k.graph and k.bytes >= MIN_GLOBAL]
    left = (f.device.end_bytes - f.device.baseline_bytes) if f.device else 0
    bound_bytes = sum(k.bytes for k in bound)
    if not bound or bound_bytes < GLOBAL_SHARE * left:
        bound, bound_bytes = [], 0
    found, code = [], []
    # An output the cache holds may hold a graph: detaching the variable leaves it there.
    if cache_bytes >= MIN_CACHE or any(k.graph and k.graph_bytes for k in cached):
        names = ", ".join(k.name for k in cached[:5]) + (f" and {len(cached) - 5} more" if len(cached) > 5 else "")
        found.append(f"IPython's output cache holds {fmt_bytes(cache_bytes)} ({names})")
        code.append("%reset -f out   # empties Out and _, __, ___ (the variables stay)")
        # %reset leaves IPython's hidden copy of _, __, ___ (user_ns_hidden): it still holds the last outputs
        code.append('get_ipython().user_ns_hidden.update(_="", __="", ___="")')
    if graphs and graph_bytes:
        names = ", ".join(k.name for k in graphs[:5]) + (f" and {len(graphs) - 5} more" if len(graphs) > 5 else "")
        found.append(
            f"{names} still hold{'s' if len(graphs) == 1 else ''} an autograd graph that saves "
            f"{fmt_bytes(graph_bytes)} of activations for a backward that has not run"
        )
        # every one of them: a graph one of them still holds keeps what they share
        code.append("# frees the saved activations (.item() for a loss)")
        code.extend(f"{k.name} = {k.name}.detach()" for k in graphs)
    if bound:
        names = ", ".join(f"{k.name} ({fmt_bytes(k.bytes)})" for k in bound[:5])
        found.append(f"variables bound in the cell keep {fmt_bytes(bound_bytes)} alive after it: {names}")
        code.append("del " + ", ".join(k.name for k in bound[:5]) + "   # once they are no longer needed")
        if any(k.device.startswith("cuda") for k in bound):
            code.append("import torch\ntorch.cuda.empty_cache()   # hand the cached blocks back to the driver")
    if hidden and f.profile.error is not None:
        found.append(
            f"{fmt_bytes(hidden)} grew in the cell and is kept by its error's traceback: the variables of the "
            f"frames it raised through, which sys (sys.last_traceback) and IPython (for %debug) hold"
        )
        code.append(RAISED_CODE)
    elif hidden:
        found.append(
            f"{fmt_bytes(hidden)} grew in the cell and is held by something no variable names "
            f"(an object's attribute, a closure, a reference cycle)"
        )
        code.append("import gc\ngc.collect()   # frees what only reference cycles hold")
    if not found:
        return None
    saving = cache_bytes + graph_bytes + hidden + bound_bytes
    if not f.worth_it(saving):
        return None
    return Suggestion(
        id="notebook_leak",
        title="Memory the notebook keeps after the cell",
        evidence="; ".join(found),
        code="\n".join(code),
        estimated_saving_bytes=saving,
    )
