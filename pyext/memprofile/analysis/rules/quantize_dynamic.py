"""CPU inference of a Linear-heavy model: dynamic int8 quantization stores the
Linear weights in 8 bits (a quarter of float32) and quantizes activations on
the fly. Only where the Linear weights are most of the peak (large layers,
small batches). Estimate: three quarters of the float32 Linear weights, freed once
the model's variable is rebound to the quantized one (the code does) and no
optimizer holds the float weights (the code lets it go)."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

LINEAR = ("Linear", "NonDynamicallyQuantizableLinear", "LazyLinear")
MIN_SHARE = 0.5


def check(f: Facts) -> Suggestion | None:
    if f.framework != "torch" or f.on_gpu or f.trained or f.stepped:
        return None
    params = sum(layer.parameter_bytes for layer in f.profile.layers)
    linear = sum(layer.parameter_bytes for layer in f.profile.layers if layer.type in LINEAR)
    if not params or linear < MIN_SHARE * params or linear < MIN_SHARE * f.peak_bytes:
        # Where activations make the peak, int8 weights save little and the
        # quantized ops' own copies of their inputs and outputs cost more
        # (a transformer LM's forward: +14.6 MiB measured against 4.6 MiB estimated).
        return None
    saving = int(0.75 * linear)
    if not f.worth_it(saving):
        return None
    root = next(
        (
            r
            for r in f.roots()
            if any(f.root_of(layer.name) == r and layer.type in LINEAR for layer in f.profile.layers)
        ),
        "model",
    )
    evidence = (
        f"the cell ran inference on the CPU; Linear layers hold {fmt_bytes(linear)} of the "
        f"{fmt_bytes(params)} of parameters ({100 * linear / params:.0f} %)"
    )
    # The float weights are freed only when nothing else holds them: the
    # model's variable is rebound, and an optimizer over them is let go.
    holders = [o.name for o in f.profile.optimizers if root in o.models and o.name.isidentifier()]
    code = (
        f"import torch\n\n# Replaces the float model (keep a copy, copy.deepcopy({root}), to train it again):\n"
        f"{root} = torch.ao.quantization.quantize_dynamic({root}.eval(), {{torch.nn.Linear}}, dtype=torch.qint8)\n"
        + "".join(f"del {h}   # it holds the float weights\n" for h in holders)
        + "# check the accuracy on a validation batch"
    )
    return Suggestion(
        id="quantize_dynamic",
        title="Quantize the Linear layers to int8 for CPU inference",
        evidence=evidence,
        code=code,
        estimated_saving_bytes=saving,
    )
