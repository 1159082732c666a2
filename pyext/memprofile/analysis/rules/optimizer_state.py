"""Optimizer state: Adam/AdamW keep two moments per trainable parameter (2x the
parameters); SGD with momentum keeps one, plain SGD none.

Only the optimizers the run stepped count: a notebook may hold another
model's optimizer (and its state) that this cell never touched. The code
uses the cell's own names: where the cell creates the optimizer, that line
is rewritten; otherwise a new optimizer is bound to the same variable.

Estimate: moving from two moments to one frees half the stepped optimizers'
state, taken off every point of the timeline where it was held (in the share
their state has of all optimizer state there); and during the step, Adam's
temporaries (the bias-corrected moments, the square root: ~1.7x the
parameters with torch's foreach implementation) become SGD's (~1x: the
momentum update), measured on a GRU with AdamW: 30.5 MB saved where halving
the state alone gives 18.9 MB.
"""

from __future__ import annotations

import ast

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import PHASES, OptimizerStat, Suggestion
from memprofile.units import fmt_bytes

#: The change must save this share of the peak (less other models' memory,
#: which no change to this cell frees): swapping the optimizer changes
#: training, worth it only for a real part of the memory.
MIN_SHARE = 0.1
#: Bytes of state per byte of parameters above which an optimizer keeps two moments.
TWO_MOMENTS = 1.5

KERAS_CODE = """\
import keras

# One moment per parameter instead of Adam's two (Adafactor: a factored fraction):
model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-2, momentum=0.9), loss=model.loss)
# (fine-tuning: freeze what you do not train, `layer.trainable = False`, then compile again:
#  frozen layers need no gradients and no optimizer state)"""


def _torch_code(f: Facts, opt: OptimizerStat) -> str:
    """The cell with its optimizer line rewritten, or a line that rebinds the optimizer."""
    made = f.cell.assigned_call(opt.name) if opt.name.isidentifier() else None
    if made is not None and made.node is not None and made.node.args:
        params = ast.unparse(made.node.args[0])
        lr = ast.unparse(made.node.args[1]) if len(made.node.args) > 1 else made.keywords.get("lr", 1e-2)
        rewritten = f.cell.with_replaced([(made.node, f"torch.optim.SGD({params}, lr={lr}, momentum=0.9)")])
        if rewritten is not None:  # one line: rewritten in place
            return "import torch\n\n# One moment per parameter instead of two: the cell with SGD+momentum\n" + rewritten
    params = f"{opt.models[0]}.parameters()" if len(opt.models) == 1 else "...  # the same parameters"
    return ("import torch\n\n"
            f"# One moment per parameter instead of {opt.type}'s two (run before the training cell):\n"
            f"{opt.name} = torch.optim.SGD({params}, lr=1e-2, momentum=0.9)\n"
            "# (on CUDA, bitsandbytes.optim.AdamW8bit keeps Adam's moments in 8 bits: a quarter of the bytes;\n"
            "#  fine-tuning: freeze what you do not train, p.requires_grad_(False): no gradients, no state)")


def _peak_with_sgd(f: Facts, fraction: float, parameter_bytes: int) -> int:
    """The timeline's peak with `fraction` of the optimizer state gone and, in
    the optimizer step, temporaries no larger than SGD's (its parameters' size)."""
    tl = f.timeline
    if tl is None or not tl.live_bytes:
        return f.peak_bytes
    state = tl.by_category.get("optimizer_state") or [0] * len(tl.live_bytes)
    temp = tl.by_category.get("temporary") or [0] * len(tl.live_bytes)
    phase = tl.phase or [-1] * len(tl.live_bytes)
    step = PHASES.index("optimizer")
    best = 0.0
    for live, s, t, ph in zip(tl.live_bytes, state, temp, phase):
        value = live - s * fraction - (max(0, t - parameter_bytes) if ph == step else 0)
        best = max(best, value)
    return min(f.peak_bytes, int(best))


def _check_torch(f: Facts) -> Suggestion | None:
    heavy = [o for o in f.stepped_optimizers
             if o.parameter_bytes and o.state_bytes >= TWO_MOMENTS * o.parameter_bytes]
    if not heavy:
        return None  # nothing stepped here, or it already keeps one moment or none
    state = sum(o.state_bytes for o in heavy)
    at_peak = f.at_peak("optimizer_state")
    if not at_peak:
        return None
    fraction = 0.5 * min(1.0, state / at_peak)
    saving = max(0, f.peak_bytes - _peak_with_sgd(f, fraction, sum(o.parameter_bytes for o in heavy)))
    if not f.worth_it(saving) or saving < MIN_SHARE * (f.peak_bytes - f.other_models_at_peak):
        return None
    opt = max(heavy, key=lambda o: o.state_bytes)
    models = ", ".join(opt.models) or "its parameters"
    evidence = (f"{opt.name} ({opt.type}) keeps {fmt_bytes(opt.state_bytes)} of state = "
                f"{opt.state_bytes / opt.parameter_bytes:.1f}x the {fmt_bytes(opt.parameter_bytes)} of parameters "
                f"of {models} it steps, {f.share(min(state, at_peak))} of the {fmt_bytes(f.peak_bytes)} peak "
                f"(two moments per parameter; SGD with momentum keeps one)")
    return Suggestion(id="optimizer_state", title=f"Shrink {opt.name}'s state (SGD with momentum)",
                      evidence=evidence, code=_torch_code(f, opt), estimated_saving_bytes=saving)


def _check_keras(f: Facts) -> Suggestion | None:
    state = f.at_peak("optimizer_state")
    if state < 2 * MIN_SHARE * max(f.peak_bytes, 1):
        return None
    saving = f.saving_without({"optimizer_state": 0.5})
    if not f.worth_it(saving):
        return None
    params = sum(layer.parameter_bytes for layer in f.profile.layers) or f.at_peak("parameter")
    ratio = f" = {state / params:.1f}x the {fmt_bytes(params)} of parameters" if params else ""
    evidence = (f"optimizer state is {fmt_bytes(state)}{ratio}, {f.share(state)} of the "
                f"{fmt_bytes(f.peak_bytes)} peak (Adam keeps two moments per trainable parameter)")
    fitted = [c.receiver for c in f.cell.calls_named("fit", "train_on_batch", "compile") if c.receiver]
    root = fitted[0] if fitted else (f.roots() or ["model"])[0]
    return Suggestion(id="optimizer_state", title="Shrink the optimizer state (lighter optimizer or frozen layers)",
                      evidence=evidence, code=KERAS_CODE.replace("model", root), estimated_saving_bytes=saving)


def check(f: Facts) -> Suggestion | None:
    if f.framework == "torch":
        return _check_torch(f)
    if f.framework == "tensorflow":
        return _check_keras(f)
    return None
