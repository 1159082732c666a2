"""Mixed precision for Keras: the global dtype policy, which layers take when
they are created (the amp rule's TensorFlow branch).

The estimate replays the peak device's timeline with each block resized as
the policy would make it (measured with Keras 3.15 / TF 2.21 on CPU):
- activations and temporaries of the compute layers (Dense, Conv, pooling,
  attention, activations) are computed and kept in 16 bits: half;
- normalisation layers (BatchNormalization, LayerNormalization, ...) cast
  their input to float32 and compute in it: their temporaries stay float32,
  and the float32 copy of their input they keep for their backward takes
  the place of the float32 output they kept before: the same bytes;
- softmax (in attention too) is computed and kept in float32;
- the loss casts the model's output to float32 and keeps it: the output
  layer's blocks stay the same size, and the loss's own;
- convolution gradients on CPU use a scratch buffer of a fixed byte size;
- variables, their gradients and optimizer slots stay float32 (the policy
  keeps variables in float32), and so does the input pipeline.
amp.py's autocast share (made for torch) was 1.3-3.6x off on Keras models
with normalisation layers, where mixed_bfloat16 saves 10 % of the peak, not 40.

On a CPU the rule stays quiet. Measured with TF 2.21 (oneDNN off) on models
the replay was not built on, mixed_bfloat16 changed the peak by -24 to +15
MiB where the replay said +10 to 0 (Dense MLPs: bfloat16 matmuls on the CPU
work through float32 copies; small CNNs: the convolution-gradient scratch
makes the peak and moves), and it trains 2-7x slower there: no advice with a
number we can stand behind. On GPUs (float16) the replay is what we have;
it has not run on one.
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

#: Layers that compute in float32 under a mixed policy (they upcast their input).
NORM_TYPES = frozenset(
    {
        "BatchNormalization",
        "SyncBatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "UnitNormalization",
        "SpectralNormalization",
    }
)
#: Softmax upcasts to float32 under the policy; attention keeps float32 copies of its scores (measured).
SOFTMAX_TYPES = frozenset({"Softmax", "MultiHeadAttention", "GroupedQueryAttention"})
#: The profile's pseudo-layers: optimizer updates, loss and tf.data stay float32.
FLOAT32_PSEUDO = frozenset({"Optimizer", "Loss", "InputPipeline"})
HALVED = ("activation", "temporary")
#: Convolution gradients on CPU work in a scratch buffer sized in bytes, not
#: elements: 21 MiB in float32 and in bfloat16 alike (measured).
SCRATCH_OPS = ("Conv2DBackprop", "Conv3DBackprop", "DepthwiseConv2dNativeBackprop")
#: Calls that train a Keras model: their receiver is the cell's model.
TRAIN_METHODS = ("fit", "train_on_batch", "compile")


def policy_name(f: Facts) -> str:
    """bfloat16 on CPUs (no float16 arithmetic there; TPUs too), float16 on GPUs."""
    return "mixed_float16" if f.on_gpu else "mixed_bfloat16"


# -- the estimate --------------------------------------------------------------
def _output_layers(f: Facts) -> set[str]:
    """Each model's last leaf layer: what the loss reads (and casts to float32)."""
    children = {layer.parent for layer in f.profile.layers if layer.parent}
    last: dict[str, str] = {}
    for layer in f.profile.layers:
        if layer.parent is not None and layer.name not in children:
            last[f.root_of(layer.name)] = layer.name
    return set(last.values())


def _kept_factor(f: Facts, layer: str, op: str, category: str, outputs: set[str]) -> float:
    """What share of a block's bytes the policy keeps (1.0: stays float32)."""
    stat = f.layers.get(layer)
    if stat is None or stat.parent is None or stat.type in FLOAT32_PSEUDO or layer in outputs:
        return 1.0  # no layer, the model's own ops, the loss and its input
    if stat.type in NORM_TYPES:
        return 1.0  # computed in float32; its float32 input copy replaces its float32 output
    if stat.type in SOFTMAX_TYPES:
        return 1.0
    if category == "temporary" and f.op_kind(op).startswith(SCRATCH_OPS):
        return 1.0
    return 0.5


def estimate_saving(f: Facts) -> int:
    """The peak device's peak less the peak its timeline would have had under
    the mixed policy (module docstring)."""
    tl = f.timeline
    if tl is None or len(tl.live_bytes) < 2:
        return 0
    outputs = _output_layers(f)
    columns = [(c, tl.by_category[c]) for c in HALVED if c in tl.by_category]
    factors: dict[tuple[int, int, str], float] = {}  # (layer, op, category) -> kept factor
    live: float = tl.live_bytes[0]
    best = live
    for k in range(1, len(tl.live_bytes)):
        change: float = tl.live_bytes[k] - tl.live_bytes[k - 1]
        for category, column in columns:
            part = column[k] - column[k - 1]
            if part:
                key = (tl.layer[k], tl.op[k] if tl.op else -1, category)
                kept = factors.get(key)
                if kept is None:
                    layer, op = (tl.labels[i] if i >= 0 else "" for i in key[:2])
                    kept = factors[key] = _kept_factor(f, layer, op, category, outputs)
                change -= part * (1.0 - kept)
        live += change
        best = max(best, live)
    return max(0, f.peak_bytes - min(f.peak_bytes, int(best)))


# -- the code: the cell's own names --------------------------------------------
def _cell_models(f: Facts) -> tuple[list[str], bool]:
    """The models the cell trains (receivers of fit/train_on_batch/compile, or
    for custom loops the models the profile saw that the cell names), and
    whether the cell builds each of them itself before training it (binds
    the name to a call: keras.Sequential, keras.Model, a build function)."""
    cell = f.cell
    trained: dict[str, int] = {}
    for call in cell.calls_named(*TRAIN_METHODS):
        if call.receiver:
            trained[call.receiver] = min(trained.get(call.receiver, call.line), call.line)
    if not trained:
        names = cell.read | set(cell.bound)
        return [r for r in f.roots() if r in names and f.layers[r].type not in FLOAT32_PSEUDO], False
    built = all(
        name in cell.bound and cell.bound[name] < line and cell.assigned_call(name) is not None
        for name, line in trained.items()
    )
    return sorted(trained, key=trained.__getitem__), built


def keras_code(f: Facts, policy: str) -> str:
    models, built = _cell_models(f)
    setting = f'import keras\n\nkeras.mixed_precision.set_global_policy("{policy}")'
    if built:
        # The cell builds its model: the policy, then the cell, builds it under it.
        return f"{setting}\n\n{f.cell.source.strip(chr(10))}"
    names = " and ".join(f"`{name}`" for name in models) or "the model"
    return (
        f"{setting}\n"
        f"# Layers take the policy when they are created: {names} keeps the float32 policy it was\n"
        f"# built with. Run the cell that builds {names} again after this one, then this cell."
    )


def _scratch_bound(f: Facts) -> bool:
    """Whether the peak is made by a convolution gradient's scratch buffer: its
    size does not change with the policy, and under the policy the peak moves
    to another layer's backward, which the replay does not model (measured on
    a small CNN: estimate 6.6 MB, the policy's peak 0.4 MB higher)."""
    tensors = f.peak.tensors if f.peak else []
    if not tensors:
        return False
    largest = tensors[0]
    return any(s in (largest.op or "") for s in SCRATCH_OPS) and largest.bytes >= 0.2 * max(f.added_bytes, 1)


def keras_suggestion(f: Facts, evidence: str, saving: int) -> Suggestion | None:
    """`saving` (amp.py's autocast share) is not used: the Keras replay replaces it."""
    if not f.on_gpu or _scratch_bound(f):
        return None  # see the module's doc
    estimate = estimate_saving(f)
    if not f.worth_it(estimate):
        return None
    policy = policy_name(f)
    norms = sorted({layer.type for layer in f.profile.layers if layer.type in NORM_TYPES})
    kept = (
        f"; {', '.join(norms)} and the loss compute in float32 and keep float32 copies"
        if norms
        else "; the loss computes in float32"
    )
    return Suggestion(
        id="amp",
        title=f"Keep activations in 16 bits (Keras {policy} policy)",
        evidence=f"{evidence}{kept}: the peak would fall by about {fmt_bytes(estimate)}",
        code=keras_code(f, policy),
        estimated_saving_bytes=estimate,
    )
