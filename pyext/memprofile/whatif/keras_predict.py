"""Will it fit for a Keras/TensorFlow run: the measured peak moved by what the model's layers say
the asked batch and sequence length add (analysis/predict/keras.py); nothing runs again.

predicted(b, s) = measured peak + activations(b, s) - activations(b0, s0): exact at the measured
size, the layers' bytes per sample for the slope; parameters, gradients and optimizer slots stay
as measured. Without the live model (a saved profile, `memprofile predict`) the recorded timeline
is replayed, its batch-sized kinds scaled (analysis/predict/scale.py).
"""

from __future__ import annotations

import math

from memprofile.analysis.predict.devices import HEADROOM, DeviceSpec, device_total_bytes
from memprofile.analysis.predict.keras import (
    BFC_SOURCE,
    KerasModel,
    KerasSource,
    bfc_reserved,
    keras_model,
    source_batch,
)
from memprofile.analysis.predict.scale import measured_scale, replayed_peak
from memprofile.model.profile import PHASES, Profile
from memprofile.units import fmt_bytes

#: Timeline phases whose activations the layers' model stands for.
_PASSES = (PHASES.index("forward"), PHASES.index("backward"))
#: Bound on the largest-batch search: larger batches are not tried.
MAX_BATCH = 1 << 24


def is_tensorflow(profile: Profile) -> bool:
    device = profile.peak_device
    return device is not None and device.name.startswith("tf:")


class KerasPredictor:
    """The same questions as whatif/predict.py's torch predictor: at(), total(), largest_batch()."""

    def __init__(self, profile: Profile, spec: DeviceSpec) -> None:
        self.profile, self.spec = profile, spec
        device = profile.peak_device
        assert device is not None
        self.measured_peak = device.peak_bytes
        self.notes: list[str] = []
        self.model: KerasModel | None = None
        source: KerasSource | None = getattr(profile, "_keras_source", None)
        batch, seq = measured_scale(profile)
        self.method = "replay"
        self.batch, self.seq = batch, seq
        if source is None:
            self.notes.append(
                "the run's Keras model is not at hand (a saved profile, a script, a run outside a notebook): "
                "the recorded timeline was replayed, its activations, inputs and temporaries scaled with the batch"
            )
            return
        batch = batch or source_batch(source)
        model = keras_model(source, batch, seq)
        if not model.models:
            self.notes.append("no Keras model among the cell's names: the recorded timeline was replayed")
        elif not batch:
            self.notes.append("the run's batch was not found (inputs, batch_size=): the recorded timeline was replayed")
        elif seq is None and any("s" in t.dims for t in model.tensors):
            self.notes.append(
                "the run's sequence length was not found (no model input was recorded): "
                "the recorded timeline was replayed"
            )
        else:
            self.method, self.model, self.batch = "keras layers", model, batch
            self.seq = seq if any("s" in t.dims for t in model.tensors) else None
            self.notes.extend(self._model_notes(model))

    def _model_notes(self, model: KerasModel) -> list[str]:
        step = "training step" if model.training else "forward pass"
        scores = any(t.what == "scores per head" for t in model.tensors)
        kept = [
            f"parameters {fmt_bytes(model.parameter_bytes)}",
            f"gradients {fmt_bytes(model.gradient_bytes)}" if model.training else "",
            f"optimizer slots {fmt_bytes(model.optimizer_bytes)} ({model.optimizer_how})"
            if model.optimizer_how
            else "",
        ]
        notes = [
            f"from the layers of {', '.join(model.models)}: each layer's output shape at the batch"
            + (" and sequence length" if self.seq else "")
            + f", times the copies a {step} keeps"
            + (", and attention's S x S scores per head" if scores else "")
            + "; anchored on the measured peak (exact at the measured size)",
            "as measured, not scaled: " + ", ".join(k for k in kept if k),
        ]
        if model.unsized:
            notes.append(
                f"no output shape for {', '.join(model.unsized)} (a subclassed layer or model, called eagerly): "
                "its activations are taken as measured"
            )
        return notes

    def at(self, batch: float, seq: float) -> tuple[int, int]:
        """(allocated, reserved) peaks at `batch` and `seq` times the measured run."""
        if self.model is not None and self.batch:
            if seq != 1.0 and self.seq is None:
                self.notes.append("the model has no sequence dimension: seq_len does not change the prediction")
            b0, s0 = self.batch, self.seq or 1
            grown = self.model.activation_bytes(b0 * batch, s0 * seq) - self.model.activation_bytes(b0, s0)
            step, other = self._anchors()
            allocated = max(0, step + grown, other)
        else:
            allocated = replayed_peak(self.profile, batch, seq)
        return allocated, self.reserved(allocated)

    def _anchors(self) -> tuple[int, int]:
        """(the highest live bytes in the forward and backward passes, elsewhere): the activations
        grow only the first; a peak in the optimizer's update (its slots' temporaries, a custom
        loop's RMSprop) stays where it is. Without phases on the timeline: the measured peak."""
        device = self.profile.peak_device
        tl = self.profile.timeline(device.name) if device is not None else None
        if tl is None or not tl.phase or not any(p in _PASSES for p in tl.phase):
            return self.measured_peak, 0
        passes = [live for live, p in zip(tl.live_bytes, tl.phase) if p in _PASSES]
        rest = [live for live, p in zip(tl.live_bytes, tl.phase) if p not in _PASSES]
        step = max(passes)
        # the timeline may be sampled: the counter's own peak, where it is in the passes
        return (self.measured_peak if step >= max(rest, default=0) else step), max(rest, default=0)

    def reserved(self, allocated: int) -> int:
        """TF's BFC allocator on a GPU (memory growth on); the allocated peak on the CPU."""
        return bfc_reserved(allocated, self.spec.capacity_bytes) if self.spec.is_cuda else allocated

    def total(self, reserved: int) -> int:
        return device_total_bytes(self.spec, reserved) if self.spec.is_cuda else reserved

    def largest_batch(self, seq: float, at_batch: tuple[float, int]) -> int | None:
        """The largest batch whose total fits: the activations are affine in the batch, so the line
        through the measured batch and twice it gives it directly; then checked, and moved to the
        exact boundary by halving where the allocator's regions make the total a staircase."""
        del at_batch  # the line is exact here: no secant needed
        if not self.batch:
            return None
        limit = self.spec.capacity_bytes * (1 - HEADROOM)

        def total(b: int) -> int:
            return self.total(self.at(b / self.batch, seq)[1]) if self.batch else 0

        b0 = self.batch
        t0, t1 = self.at(1.0, seq)[0], self.at(2.0, seq)[0]
        slope = (t1 - t0) / b0
        room = limit - (self.spec.context_bytes if self.spec.is_cuda else 0)  # for the allocated bytes
        guess = MAX_BATCH if slope <= 0 else max(1, min(MAX_BATCH, math.floor(b0 + (room - t0) / slope)))
        low = 0
        high_or_none: int | None = guess
        if total(guess) <= limit:
            low, high_or_none = guess, (guess + 1 if total(guess + 1) > limit else None)
        while high_or_none is None:  # the line was short: double until a batch does not fit
            step = min(MAX_BATCH, max(2 * low, low + 1))
            if total(step) > limit:
                high_or_none = step
            elif step == MAX_BATCH:
                self.notes.append(f"the batch search stopped at {MAX_BATCH:,}: a larger one may fit")
                return step
            else:
                low = step
        high = high_or_none
        while high - low > 1:  # where the line was off (the regions' staircase): halve to the boundary
            mid = (low + high) // 2
            low, high = (mid, high) if total(mid) <= limit else (low, mid)
        return low

    def device_notes(self) -> list[str]:
        if not self.spec.is_cuda:
            return ["on the CPU: TensorFlow's CPU allocator only (the process's own memory and libraries aside)"]
        return [
            "reserved: TF's BFC allocator (not torch's caching allocator) with memory growth, regions of 2 MiB "
            f"doubling until they cover the allocated peak ({BFC_SOURCE}); fragmentation inside them not modelled",
            "TF maps the whole GPU unless memory growth is set (tf.config.experimental.set_memory_growth) "
            "before the GPU is first used",
            f"device total = reserved + the CUDA context ({fmt_bytes(self.spec.context_bytes)}, torch's measure "
            "in devices.py; TF's cuDNN and cuBLAS handles add their own)",
            "not modelled: cuDNN's workspace choice, XLA's buffers, NCCL, other processes on the device, "
            "and GPU kernels whose temporaries differ from the CPU's",
        ]
