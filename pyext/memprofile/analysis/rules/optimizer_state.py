"""Optimizer state: Adam/AdamW keep two moments per trainable parameter (2x the
parameters); SGD with momentum keeps one, Adafactor a factored fraction, and
frozen layers none (nor gradients).

Estimate: half the state (SGD with momentum's share), taken off every point
of the timeline where it was held.
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_SHARE = 0.2

TORCH_CODE = """\
import torch

# One moment per parameter instead of Adam's two:
opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
# or, fine-tuning: train only the last layers; frozen ones need no gradients and no state
for p in model.parameters():
    p.requires_grad_(False)
for p in model.get_submodule("HEAD").parameters():   # the layers to train
    p.requires_grad_(True)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
# (on CUDA, bitsandbytes.optim.AdamW8bit keeps Adam's moments in 8 bits: a quarter of the bytes)"""

KERAS_CODE = """\
import keras

# One moment per parameter instead of Adam's two (Adafactor: a factored fraction):
model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-2, momentum=0.9), loss=model.loss)
# or, fine-tuning: freeze what you do not train (no gradients, no optimizer state), then compile again
for layer in model.layers[:-1]:
    layer.trainable = False"""


def check(f: Facts) -> Suggestion | None:
    if f.framework is None:
        return None
    state = f.at_peak("optimizer_state")
    if state < MIN_SHARE * max(f.peak_bytes, 1):
        return None
    saving = f.saving_without({"optimizer_state": 0.5})
    if not f.worth_it(saving):
        return None
    params = sum(layer.parameter_bytes for layer in f.profile.layers) or f.at_peak("parameter")
    ratio = f" = {state / params:.1f}x the {fmt_bytes(params)} of parameters" if params else ""
    evidence = (f"optimizer state is {fmt_bytes(state)}{ratio}, {f.share(state)} of the "
                f"{fmt_bytes(f.peak_bytes)} peak (Adam keeps two moments per trainable parameter)")
    root = (f.roots() or ["model"])[0]
    code = (KERAS_CODE if f.framework == "tensorflow" else TORCH_CODE).replace("model", root)
    head = next((layer.name for layer in reversed(f.profile.layers) if layer.parameter_bytes), "")
    code = code.replace("HEAD", f.relative(head) if head else "fc")
    return Suggestion(id="optimizer_state", title="Shrink the optimizer state (lighter optimizer or frozen layers)",
                      evidence=evidence, code=code, estimated_saving_bytes=saving)
