"""Mixed precision: activations kept in float32 take twice the bytes of
bfloat16/float16 ones.

Estimate: under autocast the matmul/conv family runs in 16 bits and what
follows it (activation functions, dropout, reshapes, attention) stays in 16
bits; residual additions with a float32 input, normalisation layers and
losses stay in float32. The share of the largest activations and
temporaries at the peak made by the first kind of op is the share that
halves. Autocast also keeps a 16-bit copy of each Linear/Conv weight for the
region (half their fp32 bytes). The new peak is taken over the timeline.
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


#: Ops whose outputs stay float32 under autocast (type promotion with a
#: float32 operand, or autocast's float32 list), by their last name part.
#: Normalisation runs in its input's dtype: layer/group norm usually reads a
#: float32 residual stream (transformers), batch norm a 16-bit conv output.
KEEP_FP32 = frozenset({
    "add", "add_", "sub", "layer_norm", "native_layer_norm", "group_norm", "native_group_norm",
    "cross_entropy", "cross_entropy_loss", "nll_loss", "log_softmax", "_log_softmax", "mse_loss", "sum", "mean",
    "AddV2", "Mean", "Sum",
})
HALF = ("bfloat16", "float16", "half")


def _half_share(f: Facts) -> float:
    """Share of the largest activations/temporaries at the peak that autocast
    would make 16-bit: float32 (or of unknown dtype) and made by an op outside
    KEEP_FP32. Tensors already in 16 bits count in the whole, not the share."""
    seen = [t for t in (f.peak.tensors if f.peak else []) if t.category in ("activation", "temporary")]
    seen = [t for t in seen if not t.dtype or t.dtype in FLOAT32 or t.dtype in HALF]
    total = sum(t.bytes for t in seen)
    if not total:
        return 1.0  # nothing known of them (TF's plain CPU allocator gives no dtype)
    halves = sum(t.bytes for t in seen if t.dtype not in HALF
                 and f.op_kind(t.op) not in KEEP_FP32)
    return halves / total


def check(f: Facts) -> Suggestion | None:
    if f.framework is None or not f.trained and not f.at_peak("activation"):
        return None
    activation = f.at_peak("activation")
    if activation < MIN_ACTIVATION_SHARE * max(f.added_bytes, 1):
        return None
    share = _half_share(f)
    if share < 0.5:
        return None  # already in 16 bits, or made by ops that stay in float32
    cast_weights = sum(layer.parameter_bytes for layer in f.profile.layers if layer.type in CAST_LAYERS)
    saving = f.saving_without({"activation": 0.5 * share, "temporary": 0.5 * share}, add_always=cast_weights // 2)
    if not f.worth_it(saving):
        return None
    evidence = (f"activations are {f.share(activation)} of the {fmt_bytes(f.peak_bytes)} peak "
                f"({fmt_bytes(activation)}); {share * 100:.0f} % of the largest are float32 outputs of ops "
                f"autocast runs in 16 bits")
    if f.framework == "tensorflow":
        from memprofile.analysis.rules.amp_keras import keras_suggestion

        return keras_suggestion(f, evidence, saving)
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
