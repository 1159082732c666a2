"""TF's allocator counters: `tf.config.experimental.get_memory_info` per device
at the run's start and end and at each training step's end (its peak reset for
the next), the switch that makes TF's default CPU allocator count at all, and
what oneDNN's CPU allocator leaves out of them."""

from __future__ import annotations

from typing import Any

from memprofile.capture.base import RawNote
from memprofile.capture.tensorflow import compat
from memprofile.units import fmt_bytes

#: Per TF device: {"current", "peak"}, or why there is none.
MemoryInfo = dict[str, dict[str, int] | str]


def memory_info(tf: Any, reset: bool) -> MemoryInfo:
    """Per TF device: {"current", "peak"}, or why there is none."""
    out: MemoryInfo = {}
    try:
        devices = [d.name.split("device:")[-1] for d in tf.config.list_logical_devices()]
    except Exception:
        devices = ["CPU:0"]
    for dev in devices:
        if not dev.startswith(("CPU", "GPU")):
            continue
        try:
            if reset:
                tf.config.experimental.reset_memory_stats(dev)
            info = tf.config.experimental.get_memory_info(dev)
            out[dev] = {"current": int(info["current"]), "peak": int(info["peak"])}
        except Exception as exc:
            out[dev] = str(exc).strip() or type(exc).__name__
    return out


class StepCounters:
    """Each device's counter read at a training step's end: its peak since
    the last step and its bytes in use now, the peak then reset for the next."""

    def __init__(self, tf: Any, memory_start: MemoryInfo, reset_peak: bool) -> None:
        self._tf = tf
        self._reset_peak = reset_peak
        # Devices whose counters may work; one that reads 0 at a step's end does not.
        self._counted = [dev for dev, info in memory_start.items() if isinstance(info, dict)]
        #: Devices whose peak counter memprofile reset at a step (the user's reads change: said in a note).
        self._reset: set[str] = set()

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        """Each counted device's peak since the last step and its bytes in
        use now, by the profile's device name; the peak is reset for the next."""
        experimental = self._tf.config.experimental
        peaks: dict[str, int] = {}
        ends: dict[str, int] = {}
        if not self._reset_peak:  # the user's counter is left alone: no step's own peak to read
            return peaks, ends
        for dev in list(self._counted):
            try:
                info = experimental.get_memory_info(dev)
                experimental.reset_memory_stats(dev)
            except Exception:
                self._counted.remove(dev)
                continue
            if not info["peak"] and not info["current"]:  # TF's default CPU allocator: no sizes
                self._counted.remove(dev)
                continue
            self._reset.add(dev)
            peaks[f"tf:{dev}"], ends[f"tf:{dev}"] = int(info["peak"]), int(info["current"])
        return peaks, ends

    def reset_note(self) -> RawNote | None:
        """What resetting the peak counters changed for the user, where it did."""
        if not self._reset:
            return None
        devices = ", ".join(sorted(self._reset))
        return (
            "tf_peak_reset",
            f"memprofile reset TF's peak counter ({devices}) at each training "
            "step to measure each step's peak: after the cell, "
            "tf.config.experimental.get_memory_info(...)['peak'] reads the last step's peak, "
            "not the cell's (this profile has the cell's). --no-reset-peak "
            "(memprofile.profile(reset_os_peak=False)) leaves it, and the OS's peak-RSS mark, "
            "alone, without per-step TF peaks",
            "%%memprofile --no-reset-peak",
        )


class CpuAllocatorStats:
    """TF's exported switch for the default CPU allocator's statistics (and
    with them its MemoryAllocation events): compat.cpu_allocator_stats."""

    def __init__(self, tf: Any) -> None:
        self._switch = compat.cpu_allocator_stats(tf)

    @property
    def available(self) -> bool:
        return self._switch is not None

    def turn_on(self) -> bool:
        """Switch on; True when this call did it (and so must switch off)."""
        if self._switch is None:
            return False
        enable, _, enabled = self._switch
        if enabled():
            return False
        enable()
        return True

    def turn_off(self) -> None:
        if self._switch is not None:
            self._switch[1]()


#: oneDNN's CPU allocator (mklcpu) gives the profiler no event below this size.
ONEDNN_UNSEEN_BELOW = 256 << 10
ONEDNN_NOTE = "tf_onednn_small_blocks"


def onednn_allocator(environ: Any) -> bool:
    """TF allocates CPU memory with oneDNN's allocator: oneDNN is on (TF
    decides at import, or TF_ENABLE_ONEDNN_OPTS) and BFC was not asked for."""
    if environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true"):
        return False
    return bool(compat.onednn_enabled())  # not known (None): said only where mklcpu's events show it


def onednn_unseen_note(device: str, buffers: list) -> str:
    """The warning for oneDNN's allocator. Measured (TF 2.21): its small-size
    pool emits no profiler event for blocks under 256 KiB and leaves them out
    of get_memory_info; those of the notebook's variables are known (they are
    counted from the namespace), those the cell makes are counted nowhere."""
    small = [b.nbytes for b in buffers if b.device.startswith("CPU") and 0 < b.nbytes < ONEDNN_UNSEEN_BELOW]
    known = (
        f" The {len(small)} variables and tensors under 256 KiB that the notebook held before the cell "
        f"({fmt_bytes(sum(small))}) are counted from its variables."
        if small
        else ""
    )
    return (
        f"{device}: blocks under 256 KiB made in this cell are not counted. TensorFlow's oneDNN CPU "
        f"allocator gives the profiler no event for them, so tensors that small (biases, small activations and "
        f"gradients, optimizer temporaries) are missing from the peak, ops, layers and timeline.{known} "
        f"To see every block, set "
        f"TF_ENABLE_ONEDNN_OPTS=0 (or TF_CPU_ALLOCATOR_USE_BFC=true) before TensorFlow is imported, "
        f"e.g. in the notebook's first cell, then restart the kernel."
    )


# The oneDNN note's fix: TF reads the variable once, when it is imported.
ONEDNN_FIX = (
    "# In the notebook's first cell, before TensorFlow is imported; then restart the kernel\n"
    'import os\nos.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"'
)
