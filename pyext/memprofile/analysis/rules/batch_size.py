"""The largest batch that fits the device with 15-20 % headroom, from how the
peak scales with the batch: activations, temporaries and inputs grow with it,
parameters, gradients and optimizer state do not.

It speaks when the run is near the device's limit (a smaller batch plus
gradient accumulation keeps the effective batch) and, on accelerators, when
a much larger batch would fit.
"""

from __future__ import annotations

import math
from collections import Counter

from memprofile.analysis.rules import trainers
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

#: Aim at this share of the capacity (15 % headroom).
TARGET = 0.85
NEAR_LIMIT = 0.80
SCALES = ("activation", "temporary", "input")


def batch_of(f: Facts) -> int | None:
    """The leading dimension most inputs at the peak share."""
    dims = Counter(s[0] for s in (f.peak.input_shapes if f.peak else []) if s and s[0] > 1)
    return dims.most_common(1)[0][0] if dims else None


def _trainer_batch(f: Facts) -> int | None:
    """The batch the framework trainer ran: Hugging Face's per_device_train_batch_size, the
    batch_size of Lightning's train loader (where the profile has it)."""
    info = f.trainer
    if info is None:
        return None
    key = "per_device_train_batch_size" if info.framework == trainers.HF else "batch_size"
    try:
        value = int(info.settings.get(key, ""))
    except ValueError:
        return None
    return value if value > 1 else None


def _fit_call(f: Facts):
    """Keras: the cell's one `.fit(...)` call, where it has one."""
    fits = f.cell.calls_named("fit")
    return fits[0] if len(fits) == 1 and fits[0].node is not None else None


def _keras_batch(f: Facts) -> int | None:
    """The batch of the cell's `fit`: its batch_size, or Keras's 32 for arrays; None for a
    dataset (its batches are the pipeline's: `.batch(n)` is where to change them)."""
    call = _fit_call(f)
    if call is None:
        return None
    value = call.keywords.get("batch_size")
    if isinstance(value, int) and value > 1:
        return value
    if "batch_size" in call.keywords or call.args < 2 and "y" not in call.keywords:
        return None  # a variable's batch size, or x alone (a dataset, which batches itself)
    return 32


def _code(f: Facts, batch: int, micro: int, steps: int) -> str:
    """The smaller batch in the trainer's terms, or a hand-written loop's."""
    info = f.trainer
    if info is not None and info.framework == trainers.HF:
        try:
            gas = max(1, int(info.settings.get("gradient_accumulation_steps", "1")))
        except ValueError:
            gas = 1
        what = (
            f"Hugging Face: batch {micro} per device x {steps * gas} accumulation steps = the same effective "
            f"batch ({micro * steps * gas})"
        )
        changes = {"per_device_train_batch_size": str(micro), "gradient_accumulation_steps": str(steps * gas)}
        return trainers.hf_code(f, info, changes, what)
    if info is not None:
        try:
            acc = max(1, int(info.settings.get("accumulate_grad_batches", "1")))
        except ValueError:
            acc = 1
        what = (
            f"Lightning: batch {micro} x accumulate_grad_batches={steps * acc} = the same effective batch "
            f"({micro * steps * acc})"
        )
        return trainers.lightning_code(f, info, {"accumulate_grad_batches": str(steps * acc)}, what, micro)
    if f.framework == "tensorflow":
        call = _fit_call(f)
        head = (
            f"# Keras: batch {micro} in fit; to keep the effective batch ({micro * steps}), give the optimizer\n"
            f"# gradient_accumulation_steps={steps} (Keras 3 optimizers) when you compile.\n"
        )
        arrays = call is not None and (call.args >= 2 or "y" in call.keywords or "batch_size" in call.keywords)
        if call is not None and call.node is not None and arrays:
            return (
                head
                + "# The cell with it:\n"
                + trainers.edit_call(f.cell.source, call.node, {"batch_size": str(micro)})
            )
        if call is not None:  # fit(dataset): Keras refuses batch_size there; the pipeline batches
            return (
                f"# Keras: the dataset fit reads is batched by its pipeline: .batch({micro}) where it is built\n"
                f"# (and the optimizer's gradient_accumulation_steps={steps} keeps the effective batch, "
                f"{micro * steps})\n"
            )
        return head + f"model.fit(..., batch_size={micro})"
    # The cell's own optimizer and model; the loader and loss stand for the cell's.
    opt = f.stepped_optimizers[0].name if f.stepped_optimizers else "opt"
    model = next(iter(sorted(f.cell_models)), "model")
    return (
        f"# batch {micro} x {steps} accumulation steps = the same effective batch ({micro * steps})\n"
        f"accumulate = {steps}\n{opt}.zero_grad(set_to_none=True)\n"
        f"for i, (x, y) in enumerate(loader):          # your loader, with batch_size={micro}\n"
        f"    loss = loss_fn({model}(x), y) / accumulate   # your loss\n    loss.backward()\n"
        f"    if (i + 1) % accumulate == 0:\n        {opt}.step()\n        {opt}.zero_grad(set_to_none=True)"
    )


def _note(f: Facts) -> str:
    return trainers.replay_note(f.trainer) if f.trainer is not None else ""


def check(f: Facts) -> Suggestion | None:
    if f.framework is None or not f.trained:
        return None
    batch = _trainer_batch(f) or (_keras_batch(f) if f.framework == "tensorflow" else None) or batch_of(f)
    capacity, what = f.capacity()
    if not batch or not capacity:
        return None
    per_batch = sum(f.at_peak(c) for c in SCALES)
    if not per_batch:
        return None
    per_sample = per_batch / batch
    fixed = f.peak_bytes - per_batch
    fits = math.floor((TARGET * capacity - fixed) / per_sample)
    used = f.peak_bytes / capacity
    base = (
        f"the peak is {fmt_bytes(f.peak_bytes)}, {used * 100:.0f} % of {what}; batch {batch} takes "
        f"{fmt_bytes(per_batch)} of it ({fmt_bytes(int(per_sample))} a sample), the rest "
        f"({fmt_bytes(fixed)}) does not grow with the batch"
    )
    if used >= NEAR_LIMIT and 1 <= fits < batch:
        steps = math.ceil(batch / fits)
        micro = math.ceil(batch / steps)
        saving = int((batch - micro) * per_sample)
        return Suggestion(
            id="batch_size",
            title=f"Use batch {micro} with {steps}-step gradient accumulation",
            evidence=base + f"; {fits} samples fit with 15 % headroom" + _note(f),
            code=_code(f, batch, micro, steps),
            estimated_saving_bytes=saving,
        )
    if f.on_gpu and used < NEAR_LIMIT and fits >= 2 * batch:
        code = f"batch_size = {fits}   # fits with 15 % headroom (was {batch}); scale the learning rate with it"
        if f.trainer is not None and f.trainer.framework == trainers.HF:
            code = trainers.hf_code(
                f, f.trainer, {"per_device_train_batch_size": str(fits)}, f"fits with 15 % headroom (was {batch})"
            )
        return Suggestion(
            id="batch_size",
            title=f"A batch of up to {fits} fits this device",
            evidence=base + f"; {fits} samples fit with 15 % headroom",
            code=code,
        )
    return None
