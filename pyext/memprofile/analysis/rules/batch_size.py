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


def check(f: Facts) -> Suggestion | None:
    if f.framework is None or not f.trained:
        return None
    batch = batch_of(f)
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
        # The cell's own optimizer and model; the loader and loss stand for the cell's.
        opt = f.stepped_optimizers[0].name if f.stepped_optimizers else "opt"
        model = next(iter(sorted(f.cell_models)), "model")
        code = (
            f"# batch {micro} x {steps} accumulation steps = the same effective batch ({micro * steps})\n"
            f"accumulate = {steps}\n{opt}.zero_grad(set_to_none=True)\n"
            f"for i, (x, y) in enumerate(loader):          # your loader, with batch_size={micro}\n"
            f"    loss = loss_fn({model}(x), y) / accumulate   # your loss\n    loss.backward()\n"
            f"    if (i + 1) % accumulate == 0:\n        {opt}.step()\n        {opt}.zero_grad(set_to_none=True)"
        )
        saving = int((batch - micro) * per_sample)
        return Suggestion(
            id="batch_size",
            title=f"Use batch {micro} with {steps}-step gradient accumulation",
            evidence=base + f"; {fits} samples fit with 15 % headroom",
            code=code,
            estimated_saving_bytes=saving,
        )
    if f.on_gpu and used < NEAR_LIMIT and fits >= 2 * batch:
        code = f"batch_size = {fits}   # fits with 15 % headroom (was {batch}); scale the learning rate with it"
        return Suggestion(
            id="batch_size",
            title=f"A batch of up to {fits} fits this device",
            evidence=base + f"; {fits} samples fit with 15 % headroom",
            code=code,
        )
    return None
