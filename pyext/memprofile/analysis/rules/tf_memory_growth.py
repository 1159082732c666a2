"""TensorFlow maps (nearly) all of a GPU's memory at start-up unless memory
growth is on: other processes, and PyTorch in the same kernel, find it full."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

CODE = """\
import tensorflow as tf

# Must run before TensorFlow touches a GPU: at the top of the notebook, after a kernel restart.
for gpu in tf.config.list_physical_devices("GPU"):
    tf.config.experimental.set_memory_growth(gpu, True)
# Or, without code: start the kernel with TF_FORCE_GPU_ALLOW_GROWTH=true in its environment."""


def check(f: Facts) -> Suggestion | None:
    growth = f.profile.capture.get("tf.memory_growth", "")
    forced = f.profile.capture.get("env.TF_FORCE_GPU_ALLOW_GROWTH", "").lower() == "true"
    off = [item.split("=")[0] for item in growth.split(",") if item.endswith("=off")]
    if not off or forced:
        return None
    used = [d for d in f.profile.devices if d.name.startswith("tf:GPU") and d.capacity_bytes]
    saving = sum(d.capacity_bytes - d.peak_bytes for d in used if d.capacity_bytes and d.capacity_bytes > d.peak_bytes)
    figures = "; ".join(f"{d.name} peaked at {fmt_bytes(d.peak_bytes)} of {fmt_bytes(d.capacity_bytes)}" for d in used)
    evidence = (
        f"memory growth is off for {', '.join(off)}: TensorFlow reserves the whole GPU when it starts, "
        f"whatever the model needs" + (f" ({figures})" if figures else "")
    )
    return Suggestion(
        id="tf_memory_growth",
        title="Let TensorFlow take GPU memory as it needs it (memory growth)",
        evidence=evidence,
        code=CODE,
        placement="top",
        restart_kernel=True,
        estimated_saving_bytes=saving or None,
    )
