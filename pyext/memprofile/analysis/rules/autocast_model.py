"""What `torch.autocast` would do to a profiled PyTorch run's memory, op by op.

A flat share of the activations is wrong both ways: the loss of a language
model with a large output head, computed under autocast, runs in float32 and
allocates *more* (it casts its 16-bit input to a float32 copy first), while
the matmul/conv outputs before it halve. So the run's timeline is replayed
event by event, each allocation weighed by what autocast makes of the op
behind it:

- the matmul/conv family (`LOWER`: linear, addmm, bmm, matmul, conv, sdpa,
  and on CUDA the cuDNN RNNs) outputs 16 bits: half the bytes;
- autocast's float32 ops (`FP32`: the losses on every device; softmax,
  log_softmax, layer/group norm, exp, sum, ... on CUDA as well) output
  float32, and fed a 16-bit input they first make a float32 copy of it: a
  spike while the op runs, kept for backward where the op saves its input;
- every other op (activations, dropout, pooling, batch norm, reshapes)
  outputs its input's dtype: the dtype of the stream at that point; binary
  ops with two full tensors (a residual `x + f(x)`) promote to float32 when
  the block they run in was entered in float32 (a transformer's residual
  stream stays float32, a ResNet's stays 16-bit); factories stay float32;
- a matmul fed a float32 activation keeps a 16-bit copy of it for backward
  instead of it (a norm's output), or besides it (the model's input);
- autocast caches a 16-bit copy of each Linear/Conv (CUDA: RNN) weight
  from the layer's forward until its backward;
- parameters, their gradients, optimizer state and inputs stay float32 (a
  weight's gradient is made in 16 bits and cast: both exist for a moment);
  backward temporaries take the dtype their forward op saw;
- what the cell's last run left in the names it rebinds (a `logits` alive
  until the new one replaces it) was made under autocast too, in a notebook
  that runs the changed cell again.

The estimate is the highest point of the replayed timeline, against the
measured peak. Its limits: data flow is read from the order of events (the
stream), not from the graph. When the stored timeline was thinned (a long
loop: a point stands for many events, which cannot be paired up), the
estimate falls back to the tensors alive at the peak instant, weighed by op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from memprofile.analysis.lines import BEFORE_CELL
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import PHASES, Timeline

HALF, FULL = 0.5, 1.0

_LOWER_COMMON = frozenset(
    {
        "linear",
        "addmm",
        "mm",
        "bmm",
        "matmul",
        "baddbmm",
        "addbmm",
        "einsum",
        "conv1d",
        "conv2d",
        "conv3d",
        "convolution",
        "_convolution",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "prelu",
        "scaled_dot_product_attention",
        "_native_multi_head_attention",
        "bilinear",
        "tensordot",
    }
)
#: Ops that autocast runs in 16 bits, per device type. On CPU the recurrent
#: layers are left out, counted as float32: oneDNN's 16-bit LSTM keeps part
#: of its workspace in float32 (it measured 0.71 of the float32 bytes, not
#: 0.5), and the GRU and RNN decompose into 16-bit matmuls and float32 state
#: updates; the estimate is low for them rather than wrong the other way.
#: On CPU, scaled_dot_product_attention fed 16-bit q, k, v runs its math path in float32
#: (torch upcasts them and keeps the float32 attention weights for backward; a tiny BERT
#: under torch.autocast("cpu", bfloat16) kept its 3 x 8 MiB per layer, as in float32):
#: float32 there, not 16 bits.
LOWER = {
    "cpu": (_LOWER_COMMON - {"scaled_dot_product_attention"}) | {"linalg_vecdot", "conv_tbc"},
    "cuda": _LOWER_COMMON
    | {
        "addmv",
        "addr",
        "mv",
        "chain_matmul",
        "multi_dot",
        "lstm",
        "gru",
        "rnn_tanh",
        "rnn_relu",
        "_cudnn_rnn",
        "lstm_cell",
        "gru_cell",
        "rnn_tanh_cell",
        "rnn_relu_cell",
    },
}
_LOSSES = frozenset(
    {
        "cross_entropy_loss",
        "cross_entropy",
        "nll_loss",
        "nll_loss2d",
        "nll_loss_nd",
        "mse_loss",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "kl_div",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
        "poisson_nll_loss",
        "hinge_embedding_loss",
        "margin_ranking_loss",
        "soft_margin_loss",
        "multi_margin_loss",
        "multilabel_margin_loss",
        "triplet_margin_loss",
        "cosine_embedding_loss",
        "ctc_loss",
    }
)
#: Ops that autocast runs in float32, per device type.
FP32 = {
    "cpu": _LOSSES
    | {
        "scaled_dot_product_attention",
        "prod",
        "cdist",
        "avg_pool3d",
        "max_pool3d",
        "adaptive_avg_pool3d",
        "grid_sampler",
        "stft",
        "quantile",
        "nanquantile",
        "trace",
    },
    "cuda": _LOSSES
    | {
        "softmax",
        "_softmax",
        "log_softmax",
        "_log_softmax",
        "softmin",
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "native_group_norm",
        "exp",
        "expm1",
        "log",
        "log10",
        "log2",
        "log1p",
        "pow",
        "rsqrt",
        "reciprocal",
        "softplus",
        "sum",
        "prod",
        "cumsum",
        "cumprod",
        "norm",
        "frobenius_norm",
        "nuclear_norm",
        "logsumexp",
        "cosine_similarity",
        "dist",
        "cdist",
        "pdist",
        "renorm",
        "erfinv",
        "acos",
        "asin",
        "cosh",
        "sinh",
        "tan",
    },
}
#: Float32 ops that save their input for backward: the float32 copy of a
#: 16-bit input lives as long as their output, not only while they run.
SAVES_INPUT = frozenset(
    {
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "native_group_norm",
        "mse_loss",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "kl_div",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
        "pow",
        "norm",
        "log",
        "cdist",
        "cosine_similarity",
        "prod",
        "cumprod",
    }
)
#: Ops that combine two tensors: type promotion makes them float32 if one is.
BINARY = frozenset(
    {
        "add",
        "add_",
        "sub",
        "sub_",
        "mul",
        "mul_",
        "div",
        "div_",
        "where",
        "cat",
        "stack",
        "addcmul",
        "addcdiv",
        "maximum",
        "minimum",
        "lerp",
        "hstack",
        "vstack",
        "concat",
    }
)
#: Ops that make tensors from nothing: float32 (the default dtype).
FACTORY = frozenset(
    {
        "empty",
        "empty_strided",
        "zeros",
        "ones",
        "full",
        "rand",
        "randn",
        "randint",
        "randperm",
        "arange",
        "linspace",
        "tensor",
        "scalar_tensor",
        "normal",
        "from_numpy",
        "eye",
    }
)
#: Layer types whose weights autocast casts to 16 bits and caches, per device.
_CAST_COMMON = (
    "Linear",
    "LazyLinear",
    "Bilinear",
    "NonDynamicallyQuantizableLinear",
    "MultiheadAttention",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "PReLU",
)
CAST_LAYERS = {
    "cpu": frozenset(_CAST_COMMON),
    "cuda": frozenset(_CAST_COMMON + ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")),
}

_BACKWARD = re.compile(r"^(?:Native|Cudnn|Mkldnn|Miopen)?(\w+?)Backward\d*$")
_KEEP = ("parameter", "gradient", "optimizer_state", "input")


def backward_kind(node: str) -> str:
    """An autograd node's forward op: LogSoftmaxBackward0 -> log_softmax."""
    m = _BACKWARD.match(node)
    if not m:
        return node
    return re.sub(r"(?<!^)(?=[A-Z])", "_", m.group(1)).lower()


@dataclass
class Estimate:
    """The run's peak under autocast, and what makes the difference."""

    peak_bytes: int
    saving_bytes: int  # the measured peak less the estimated one; negative: autocast would add
    #: At the measured peak, per op kind: the bytes autocast would save there,
    #: and the bytes of autocast's float32 ops (and their backward), not saved.
    saved: dict[str, int] = field(default_factory=dict)
    kept_fp32: dict[str, int] = field(default_factory=dict)
    #: At the estimated peak: 16-bit weight copies and float32 input copies.
    weight_copies_bytes: int = 0
    fp32_copies_bytes: int = 0
    new_peak_phase: str = ""
    thinned: bool = False


class _Alloc:
    __slots__ = ("size", "factor", "kind")

    def __init__(self, size: int, factor: float, kind: str) -> None:
        self.size, self.factor, self.kind = size, factor, kind


def estimate(f: Facts, device: str = "cpu") -> Estimate | None:
    """Replay the peak device's timeline as autocast would change it (None:
    no timeline with ops to replay).

    Twice where the cell rebinds names: what it left in them last time (a
    float32 `logits`, alive until the new one replaces it) would have been
    made under autocast too, so its weight is that of what this run leaves."""
    tl = f.timeline
    if tl is None or len(tl.live_bytes) < 2 or not tl.op:
        return None
    if tl.recorded_points + 1 > len(tl.live_bytes):
        return _at_the_peak(f, tl, device)
    replay = _Replay(f, tl, device)
    result = replay.run({})
    previous = _previous_values(f, tl, replay.left)
    return replay.run(previous) if previous else result


def _at_the_peak(f: Facts, tl: Timeline, device: str) -> Estimate:
    """For a thinned timeline (a long run: a point stands for many events,
    which cannot be paired up): what is alive at the peak instant, weighed
    by op (a matmul's outputs and backward 16-bit, a float32 op's not; other
    ops in a layer follow a matmul, outside layers a loss), plus the 16-bit
    weight copies. The peak is taken not to move."""
    lower, fp32 = LOWER[device], FP32[device]
    saved: dict[str, int] = {}
    kept: dict[str, int] = {}
    layered = {t.op for t in (f.peak.tensors if f.peak else []) if t.layer}
    for op, size in (f.peak.by_op if f.peak else {}).items():
        kind = f.op_kind(op)
        forward = backward_kind(kind)
        if op == BEFORE_CELL:
            continue
        if kind in fp32 or forward in fp32:
            kept[kind] = kept.get(kind, 0) + size
        elif kind in lower or forward in lower or (op in layered and kind not in FACTORY):
            saved[kind] = saved.get(kind, 0) + size // 2
    categories = f.peak.by_category if f.peak else {}
    movable = sum(categories.get(c, 0) for c in ("activation", "temporary", "other"))
    total = min(sum(saved.values()), movable // 2)
    casts = sum(
        layer.parameter_bytes // 2
        for layer in f.profile.layers
        if layer.type in CAST_LAYERS[device] and layer.parameter_bytes
    )
    peak = f.peak_bytes - total + casts
    return Estimate(
        peak_bytes=peak,
        saving_bytes=f.peak_bytes - peak,
        saved=dict(sorted(saved.items(), key=lambda kv: -kv[1])),
        kept_fp32=dict(sorted(kept.items(), key=lambda kv: -kv[1])),
        weight_copies_bytes=casts,
        new_peak_phase=_phase_at_peak(tl),
        thinned=True,
    )


def _phase_at_peak(tl: Timeline) -> str:
    i = max(range(len(tl.live_bytes)), key=tl.live_bytes.__getitem__)
    phase = tl.phase[i] if i < len(tl.phase) else -1
    return PHASES[phase] if 0 <= phase < len(PHASES) else "forward"


def _previous_values(f: Facts, tl: Timeline, left: list[_Alloc]) -> dict[int, list[float]]:
    """Sizes (and weights) of tensors from before the cell that the cell
    replaced: the variables it binds and still holds, new, and as large as
    something this run made and left alive."""
    bound = set(f.cell.bound) if f.cell.parsed else set()
    made = {a.size: a.factor for a in left if a.factor != FULL}
    freed = _freed_from_before(tl)
    found: dict[int, list[float]] = {}
    for kept in f.profile.kept:
        name = kept.name.split("[", 1)[0].split(".", 1)[0]
        size = kept.bytes
        if kept.via == "variable" and kept.new and name in bound and size in made and freed.get(size, 0) > 0:
            freed[size] -= 1
            found.setdefault(size, []).append(made[size])
    return found


def _freed_from_before(tl: Timeline) -> dict[int, int]:
    """How many tensors from before the cell the run freed, by size."""
    before = tl.labels.index(BEFORE_CELL) if BEFORE_CELL in tl.labels else None
    counts: dict[int, int] = {}
    for i in range(1, len(tl.live_bytes)):
        delta = tl.live_bytes[i] - tl.live_bytes[i - 1]
        if delta < 0 and before is not None and tl.op[i] == before:
            counts[-delta] = counts.get(-delta, 0) + 1
    return counts


class _Replay:
    def __init__(self, f: Facts, tl: Timeline, device: str) -> None:
        self.f, self.tl = f, tl
        self.lower, self.fp32 = LOWER[device], FP32[device]
        self.parents = {layer.name: layer.parent for layer in f.profile.layers}
        self.op_inputs = _first_input_bytes(f)
        self.data_bytes = sum(_numel(s) for s in (f.peak.input_shapes if f.peak else [])) * 4
        # Weight copies autocast caches, per layer whose events stand for it;
        # and the sizes of the weights, whose gradients stay float32.
        self.casts: dict[str, int] = {}
        self.weights: dict[str, int] = {}
        for layer in f.profile.layers:
            if layer.type in CAST_LAYERS[device] and layer.parameter_bytes:
                owner = layer.name if layer.name in self.tl.labels else (layer.parent or layer.name)
                self.casts[owner] = self.casts.get(owner, 0) + layer.parameter_bytes // 2
                self.weights[owner] = max(self.weights.get(owner, 0), layer.parameter_bytes)
        self.left: list[_Alloc] = []

    def run(self, previous: dict[int, list[float]]) -> Estimate:
        f, tl, lower, fp32 = self.f, self.tl, self.lower, self.fp32
        labels, n = tl.labels, len(tl.live_bytes)
        phases = tl.phase or [-1] * n
        backward, optimizer = PHASES.index("backward"), PHASES.index("optimizer")
        columns = tl.by_category or {"other": tl.live_bytes}
        previous = {size: list(weights) for size, weights in previous.items()}
        pool: dict[tuple, list[_Alloc]] = {}
        live = float(tl.live_bytes[0]) - sum(s * (FULL - w) for s, ws in previous.items() for w in ws)
        cast_live: dict[str, int] = {}
        stream = FULL  # dtype of the last forward output
        roots: set[str] = set()
        entry: dict[str, float] = {}  # block entry dtypes
        last_forward: _Alloc | None = None
        seen_input: dict[tuple[str, str], float] = {}  # (layer, op kind) -> dtype of its input in forward
        layer_out: dict[str, list[float]] = {}  # layer -> [bytes, weighted bytes] of its forward outputs
        in_forward = False
        old_peak_i = max(range(n), key=tl.live_bytes.__getitem__)
        best, best_i, spike_at_best, casts_at_best = live, 0, 0.0, 0
        at_old_peak: list[tuple[str, _Alloc]] = []
        for i in range(1, n):
            op = labels[tl.op[i]] if 0 <= tl.op[i] < len(labels) else ""
            layer = labels[tl.layer[i]] if 0 <= tl.layer[i] < len(labels) else ""
            kind = f.op_kind(op)
            phase = phases[i]
            spike = 0.0
            forward = phase not in (backward, optimizer)
            if forward and (not in_forward or layer and f.root_of(layer) not in roots):
                if not in_forward:
                    roots, entry = set(), {}
                stream, last_forward = FULL, None  # a model called anew: its input is float32 data
            in_forward = forward
            if forward and layer:
                roots.add(f.root_of(layer))
                for outer in _ancestors(layer, self.parents):
                    entry.setdefault(outer, stream)  # the dtype a block was entered with
            if phase == backward and layer in self.casts and cast_live.pop(layer, None) is not None:
                live -= self.casts[layer]  # the layer's backward has used its 16-bit weight copy
            elif forward and layer in self.casts and layer not in cast_live and kind in lower:
                cast_live[layer] = self.casts[layer]
                live += self.casts[layer]
            for category, column in columns.items():
                delta = column[i] - column[i - 1]
                if not delta:
                    continue
                key = (op, layer, category)
                if delta < 0:
                    if op == BEFORE_CELL and previous.get(-delta):
                        live += delta * previous[-delta].pop()  # what the cell left last time, replaced
                    else:
                        live -= _free(pool.get(key), -delta)
                    continue
                if category in _KEEP or kind in FACTORY:
                    factor = FULL
                elif phase == optimizer:
                    factor = FULL
                elif not forward:
                    factor = _backward_factor(kind, layer, lower, fp32, seen_input, layer_out)
                    weight = self.weights.get(layer, 0)
                    if factor < FULL and weight and 0.9 * weight <= delta <= weight:
                        # a weight's gradient: made in 16 bits, then cast to float32
                        factor, spike = FULL, max(spike, HALF * delta)
                elif kind in lower:
                    factor = HALF
                    if stream == FULL:
                        # its float32 input: kept for backward as a 16-bit copy
                        # instead (a norm's output) or besides it (the model's input)
                        if last_forward is not None and last_forward.factor == FULL and last_forward.kind:
                            live -= last_forward.size * (FULL - HALF)
                            last_forward.factor = HALF
                        elif last_forward is None and self.data_bytes and category == "activation":
                            factor += HALF * min(self.data_bytes, self.op_inputs.get(op, self.data_bytes)) / delta
                    seen_input[(layer, "lower")] = stream
                elif kind in fp32:
                    factor = FULL
                    if stream == HALF:
                        copy = self.op_inputs.get(op) or delta
                        if kind in SAVES_INPUT and category == "activation":
                            factor = FULL + copy / delta
                        else:
                            spike = max(spike, float(copy))
                    seen_input[(layer, "fp32")] = stream
                elif kind in BINARY and self.op_inputs.get(op, 0) and entry.get(layer, stream) == FULL:
                    factor = FULL  # x + f(x) with x float32
                else:
                    factor = stream
                if category == "gradient" and phase == backward:
                    spike = max(spike, HALF * delta)  # made in 16 bits, then cast to float32
                if forward:
                    seen_input.setdefault((layer, kind), stream)
                    if category in ("activation", "temporary", "other"):
                        stream = HALF if factor < FULL else FULL
                        sums = layer_out.setdefault(layer, [0.0, 0.0])
                        sums[0] += delta
                        sums[1] += delta * min(factor, FULL)
                a = _Alloc(delta, factor, kind if forward and category == "activation" else "")
                pool.setdefault(key, []).append(a)
                live += delta * factor
                if forward and category in ("activation", "temporary"):
                    last_forward = a
            value = live + spike
            if value > best:
                best, best_i, spike_at_best, casts_at_best = value, i, spike, sum(cast_live.values())
            if i == old_peak_i:
                at_old_peak = [(k[0], a) for k, allocs in pool.items() if k[2] not in _KEEP for a in allocs]
        self.left = [a for k, allocs in pool.items() if k[2] not in _KEEP for a in allocs]
        saved: dict[str, int] = {}
        kept: dict[str, int] = {}
        for op, a in at_old_peak:
            name = f.op_kind(op)
            if name in fp32 or backward_kind(name) in fp32:
                kept[name] = kept.get(name, 0) + a.size
            elif a.factor < FULL:
                saved[name] = saved.get(name, 0) + int(a.size * (FULL - a.factor))
        phase_at = phases[best_i] if best_i < len(phases) else -1
        return Estimate(
            peak_bytes=int(best),
            saving_bytes=f.peak_bytes - int(best),
            saved=dict(sorted(saved.items(), key=lambda kv: -kv[1])),
            kept_fp32=dict(sorted(kept.items(), key=lambda kv: -kv[1])),
            weight_copies_bytes=casts_at_best,
            fp32_copies_bytes=int(spike_at_best),
            new_peak_phase=PHASES[phase_at] if 0 <= phase_at < len(PHASES) else "forward",
            thinned=bool(tl.recorded_points) and tl.recorded_points + 1 > n,
        )


def _backward_factor(kind: str, layer: str, lower, fp32, seen_input, layer_out) -> float:
    """A backward allocation is a gradient of what its forward op saw: the
    dtype of that op's input (16-bit behind a matmul fed 16 bits, float32
    behind autocast's float32 ops and their casts)."""
    forward = backward_kind(kind)
    if forward in lower:
        return seen_input.get((layer, "lower"), HALF)
    if forward in fp32:
        return FULL
    if (layer, forward) in seen_input:
        return seen_input[(layer, forward)]
    total, weighted = layer_out.get(layer, (0.0, 0.0))
    return weighted / total if total else FULL


def _free(allocs: list[_Alloc] | None, size: int) -> float:
    """Take `size` bytes out of the pool (the latest allocation of that size,
    else the latest ones): their weighted bytes."""
    if not allocs:
        return float(size)
    for k in range(len(allocs) - 1, -1, -1):
        if allocs[k].size == size:
            return size * allocs.pop(k).factor
    weighted, left = 0.0, size
    while left > 0 and allocs:
        a = allocs[-1]
        take = min(left, a.size)
        weighted += take * a.factor
        left -= take
        a.size -= take
        if not a.size:
            allocs.pop()
    return weighted + left


def _ancestors(layer: str, parents: dict[str, str | None]):
    seen = set()
    while layer and layer not in seen:  # a loaded profile may name a cycle: walk it once
        seen.add(layer)
        yield layer
        layer = parents.get(layer) or ""


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _first_input_bytes(f: Facts) -> dict[str, int]:
    """Float32 bytes of each op's first input (its largest sampled shape), for
    the copies autocast makes of it. A key only for ops whose calls take two
    full tensors (binary ops: a residual add, not `x * 0.5`)."""
    found: dict[str, int] = {}
    for stat in f.profile.ops:
        best = 0
        for text in stat.input_shapes:
            shapes = _parse_shapes(text)
            if not shapes:
                continue
            kind = f.op_kind(stat.name)
            if kind in BINARY and sum(1 for s in shapes if s) < 2:
                continue
            best = max(best, _numel(shapes[0]) * 4)
        if best:
            found[stat.name] = best
    return found


def _parse_shapes(text: str) -> list[list[int]]:
    return [[int(d) for d in re.findall(r"\d+", part)] for part in re.findall(r"\[[^\[\]]*\]", text)]
