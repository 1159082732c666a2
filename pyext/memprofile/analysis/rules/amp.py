"""Mixed precision: run the forward pass and the loss under autocast.

PyTorch: the estimate replays the run op by op as autocast would run it
(autocast_model.py: 16-bit matmul/conv outputs, float32 losses with their
float32 input copies, cached 16-bit weights, float32 gradients); the code
wraps the cell's forward pass and loss only, not backward() and the
optimizer step (autocast_code.py). The rule stays quiet when the cell
already uses autocast, when the activations are already 16-bit, and when
autocast would save less than the floor or make the peak grow.

TensorFlow (Keras's mixed policy, amp_keras.py): the share of the largest
float32 activations and temporaries at the peak made by ops that run in 16
bits under the policy halves, over the timeline.
"""

from __future__ import annotations

from memprofile.analysis.rules import autocast_code, autocast_model, trainers
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

#: Keras layer types whose weights the mixed policy casts to 16 bits.
CAST_LAYERS = ("Dense", "Conv2D", "Conv1D", "EinsumDense")
FLOAT32 = ("float32", "float")
HALF = ("bfloat16", "float16", "half")
MIN_ACTIVATION_SHARE = 0.2
#: Ops whose outputs stay float32 under Keras's mixed policy (by last name part).
KEEP_FP32 = frozenset(
    {
        "add",
        "add_",
        "sub",
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "native_group_norm",
        "cross_entropy",
        "cross_entropy_loss",
        "nll_loss",
        "log_softmax",
        "_log_softmax",
        "mse_loss",
        "sum",
        "mean",
        "AddV2",
        "Mean",
        "Sum",
    }
)


def check(f: Facts) -> Suggestion | None:
    if f.framework is None or not f.trained and not f.at_peak("activation"):
        return None
    if f.framework == "tensorflow":
        return _keras(f)
    return _torch(f)


def _torch(f: Facts) -> Suggestion | None:
    tree = f.cell.tree
    if autocast_code.runs_under_autocast(tree) or _already_16bit(f):
        return None
    device = "cuda" if f.on_gpu else "cpu"
    est = autocast_model.estimate(f, device)
    if est is None or not f.worth_it(est.saving_bytes):
        return None
    dtype = "float16" if f.on_gpu else "bfloat16"
    if f.trainer is not None:
        return _trainer(f, est)
    optimizers = tuple(o.name for o in f.stepped_optimizers if o.name.isidentifier())
    code = autocast_code.rewrite(
        f.profile.source, device=device, trained=f.trained, optimizers=optimizers, backward_line=_backward_line(f)
    )
    return Suggestion(
        id="amp",
        title=f"Run the forward pass and loss under autocast ({dtype})",
        evidence=_evidence(f, est),
        code=code,
        estimated_saving_bytes=est.saving_bytes,
        can_try=True,
        try_change="amp",
    )


def _trainer(f: Facts, est: autocast_model.Estimate) -> Suggestion | None:
    """The trainer's own mixed precision: TrainingArguments(bf16=True) (fp16 on GPUs
    without bfloat16), Lightning's precision="bf16-mixed" ("16-mixed" on CUDA). Both run
    the forward pass and the loss under torch.autocast, which is what the estimate replays."""
    info = f.trainer
    assert info is not None
    s = info.settings
    if info.framework == trainers.HF:
        if s.get("bf16") == "True" or s.get("fp16") == "True":
            return None  # already mixed precision (and its activations would be 16-bit)
        flag = "bf16"
        what = (
            "Hugging Face runs the forward pass and the loss under torch.autocast with bf16=True "
            "(on GPUs without bfloat16, V100 and T4: fp16=True)"
            if f.on_gpu
            else "Hugging Face runs the forward pass and the loss under torch.autocast(bfloat16) with bf16=True"
        )
        code = trainers.hf_code(f, info, {flag: "True"}, what)
        title = f"Train in mixed precision: {info.args_type or 'TrainingArguments'}(bf16=True)"
    else:
        if "16" in s.get("precision", ""):
            return None
        precision = '"16-mixed"' if f.on_gpu else '"bf16-mixed"'
        what = f"Lightning runs the forward pass and the loss under torch.autocast with precision={precision}" + (
            ' ("bf16-mixed" on Ampere and newer GPUs)' if f.on_gpu else ""
        )
        code = trainers.lightning_code(f, info, {"precision": precision}, what)
        title = f"Train in mixed precision: Trainer(precision={precision})"
    return Suggestion(
        id="amp",
        title=title,
        evidence=_evidence(f, est) + trainers.replay_note(info),
        code=code,
        estimated_saving_bytes=est.saving_bytes,
    )


def _evidence(f: Facts, est: autocast_model.Estimate) -> str:
    activation = f.at_peak("activation")
    saved = sum(est.saved.values())
    parts = [
        f"activations are {f.share(activation)} of the {fmt_bytes(f.peak_bytes)} peak ({fmt_bytes(activation)})",
        f"at the peak, {fmt_bytes(saved)} would be saved on float32 outputs of ops autocast runs in 16 bits "
        f"({_top(est.saved)})",
    ]
    fp32 = {op: b for op, b in est.kept_fp32.items() if b >= saved // 20}
    if fp32:
        parts.append(
            f"{fmt_bytes(sum(fp32.values()))} stay float32 ({_top(fp32)}: autocast runs losses in float32, "
            f"and on the CPU attention's math, and casts their 16-bit input to a float32 copy first)"
        )
    if est.weight_copies_bytes:
        parts.append(f"its 16-bit weight copies add {fmt_bytes(est.weight_copies_bytes)}")
    where = (
        "at the same instant (the run's timeline was thinned: the estimate is the peak instant's)"
        if est.thinned
        else f"in the {est.new_peak_phase}"
    )
    parts.append(f"the peak would be {fmt_bytes(est.peak_bytes)}, {where}")
    return "; ".join(parts)


def _top(by_op: dict[str, int], n: int = 3) -> str:
    return ", ".join(f"{op} {fmt_bytes(b)}" for op, b in list(by_op.items())[:n])


def _already_16bit(f: Facts) -> bool:
    """Most of the largest activations/temporaries at the peak are 16-bit."""
    known = [t for t in (f.peak.tensors if f.peak else []) if t.category in ("activation", "temporary") and t.dtype]
    half = sum(t.bytes for t in known if t.dtype in HALF)
    return bool(known) and half * 2 >= sum(t.bytes for t in known)


def _backward_line(f: Facts) -> int | None:
    """The cell's line that allocated the most in backward ops, where lines are known."""
    lines = [(sum(b for op, b in line.ops.items() if "Backward" in op), line.line) for line in f.profile.lines]
    best = max(lines, default=(0, None))
    return best[1] if best[0] else None


# -- Keras ---------------------------------------------------------------------
def _half_share(f: Facts) -> float:
    """Share of the largest activations/temporaries at the peak that the mixed
    policy would make 16-bit: float32 (or of unknown dtype) and made by an op
    outside KEEP_FP32. Tensors already in 16 bits count in the whole, not the share."""
    seen = [t for t in (f.peak.tensors if f.peak else []) if t.category in ("activation", "temporary")]
    seen = [t for t in seen if not t.dtype or t.dtype in FLOAT32 or t.dtype in HALF]
    total = sum(t.bytes for t in seen)
    if not total:
        return 1.0  # nothing known of them (TF's plain CPU allocator gives no dtype)
    halves = sum(t.bytes for t in seen if t.dtype not in HALF and f.op_kind(t.op) not in KEEP_FP32)
    return halves / total


def _keras(f: Facts) -> Suggestion | None:
    from memprofile.analysis.rules.amp_keras import keras_suggestion

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
    evidence = (
        f"activations are {f.share(activation)} of the {fmt_bytes(f.peak_bytes)} peak "
        f"({fmt_bytes(activation)}); {share * 100:.0f} % of the largest are float32 outputs of ops "
        f"autocast runs in 16 bits"
    )
    return keras_suggestion(f, evidence, saving)
