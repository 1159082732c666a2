"""A profile's peak at another batch and sequence length, from its recorded timeline.

The fallback of whatif/predict.py, where the cell cannot be re-executed: each point of
the peak device's timeline is split by kind (Timeline.by_category), and the kinds that
grow with the batch (activations, inputs made during the run, forward and backward
temporaries) are scaled by the batch factor times the sequence factor; parameters,
gradients, optimizer state and the optimizer step's temporaries are not. Attention's
S x S scores grow with the square of the sequence: not modelled here (the fake-execution
method runs them); the prediction's note says which method made it.
"""

from __future__ import annotations

from collections import Counter

from memprofile.model.profile import PHASES, Profile

#: Kinds of memory that grow with the batch (and the sequence length).
BATCHED = ("activation", "input", "temporary")


def measured_scale(profile: Profile) -> tuple[int | None, int | None]:
    """The run's batch and sequence length: dims 0 and 1 of the model inputs it saw; where
    it saw none (a trainer's model called with keyword arguments), the batch the trainer
    was set to (HF's per_device_train_batch_size, Lightning's train loader's batch_size)."""
    shapes = profile.peak.input_shapes if profile.peak is not None else []
    batch = Counter(s[0] for s in shapes if s).most_common(1)
    seq = Counter(s[1] for s in shapes if len(s) >= 2).most_common(1)
    return (batch[0][0] if batch else _trainer_batch(profile)), (seq[0][0] if seq else None)


def _trainer_batch(profile: Profile) -> int | None:
    settings = profile.trainer.settings if profile.trainer is not None else {}
    for key in ("per_device_train_batch_size", "batch_size"):
        value = settings.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def replayed_peak(profile: Profile, batch: float, seq: float = 1.0) -> int:
    """The highest live bytes of the peak device's timeline with its batch-sized kinds scaled."""
    device = profile.peak_device
    if device is None:
        return profile.peak_bytes
    tl = profile.timeline(device.name)
    if tl is None or not tl.by_category:
        return round(profile.peak_bytes * batch * seq)  # no kinds recorded: all of it, an upper bound
    factor = batch * seq
    optimizer = PHASES.index("optimizer")
    base = device.baseline_by_category
    best = 0
    for i, live in enumerate(tl.live_bytes):
        extra = 0.0
        for kind in BATCHED:
            column = tl.by_category.get(kind)
            if column is None or (kind == "temporary" and tl.phase and tl.phase[i] == optimizer):
                continue
            grown = column[i] - base.get(kind, 0)  # what the run made, not what it found
            extra += max(0, grown) * (factor - 1.0)
        best = max(best, round(live + extra))
    return best
