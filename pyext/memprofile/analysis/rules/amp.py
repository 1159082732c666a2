"""Mixed precision: activations kept in float32 take twice the bytes of
bfloat16/float16 ones.

Estimate: under autocast the matmul/conv family runs in 16 bits and what
follows it (activation functions, dropout) stays in 16 bits, so float32
activations and temporaries halve; autocast also keeps a 16-bit copy of each
Linear/Conv weight for the duration of the region (half their fp32 bytes).
The new peak is taken over the whole timeline.
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

#: Layer types whose weights autocast casts (and caches) in 16 bits.
CAST_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "Bilinear", "LazyLinear", "MultiheadAttention",
               "NonDynamicallyQuantizableLinear", "Dense", "Conv2D", "Conv1D", "EinsumDense")
FLOAT32 = ("float32", "float")
MIN_ACTIVATION_SHARE = 0.2


def _fp32_share(f: Facts) -> float:
    """Share of float32 among the largest activations/temporaries at the peak."""
    seen = [t for t in (f.peak.tensors if f.peak else []) if t.category in ("activation", "temporary") and t.dtype]
    total = sum(t.bytes for t in seen)
    if not total:
        return 1.0  # no dtype known: TF's events carry no dtype on every allocator
    return sum(t.bytes for t in seen if t.dtype in FLOAT32) / total


def check(f: Facts) -> Suggestion | None:
    if f.framework is None or not f.trained and not f.at_peak("activation"):
        return None
    activation = f.at_peak("activation")
    if activation < MIN_ACTIVATION_SHARE * max(f.added_bytes, 1):
        return None
    fp32 = _fp32_share(f)
    if fp32 < 0.5:
        return None  # already in 16 bits
    cast_weights = sum(layer.parameter_bytes for layer in f.profile.layers if layer.type in CAST_LAYERS)
    saving = f.saving_without({"activation": 0.5 * fp32, "temporary": 0.5 * fp32}, add_always=cast_weights // 2)
    if not f.worth_it(saving):
        return None
    evidence = (f"activations are {f.share(activation)} of the {fmt_bytes(f.peak_bytes)} peak "
                f"({fmt_bytes(activation)}), {fp32 * 100:.0f} % of them float32")
    if f.framework == "tensorflow":
        return Suggestion(
            id="amp", title="Keep activations in 16 bits (Keras mixed precision)", evidence=evidence,
            code=('import keras\n\n# Before the model is built (layers take the policy when they are created):\n'
                  'keras.mixed_precision.set_global_policy("mixed_float16")  # "mixed_bfloat16" on CPUs and TPUs'),
            estimated_saving_bytes=saving,
        )
    device = "cuda" if f.on_gpu else "cpu"
    dtype = "torch.float16" if f.on_gpu else "torch.bfloat16"
    header = f'import torch\n\nwith torch.autocast("{device}", dtype={dtype}):'
    code = f.cell_inside(header)
    if f.on_gpu:
        code += ("\n# with float16, scale the loss: scaler = torch.amp.GradScaler(); "
                 "scaler.scale(loss).backward(); scaler.step(opt); scaler.update()")
    return Suggestion(
        id="amp", title=f"Run the cell under autocast ({dtype.split('.')[1]})", evidence=evidence, code=code,
        estimated_saving_bytes=saving, can_try=True, try_change="amp",
    )
