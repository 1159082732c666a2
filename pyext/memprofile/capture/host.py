"""Process memory (resident set size) sampled by a background thread.

The framework-free collector: every profile has it, so a cell that uses no
framework still gets a real timeline. The sampler reads RSS through psutil at
`interval_s` (default 5 ms, 200 Hz). The exact peak comes from the OS where it
keeps one: on Linux the VmHWM high-water mark, which is reset at start by
writing "5" to /proc/self/clear_refs (this also lowers what
`resource.getrusage().ru_maxrss` reports afterwards; pass reset_os_peak=False to
leave it alone). Elsewhere getrusage's ru_maxrss is used
when it rose during the run; without either, the sampled maximum.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array

import psutil

try:
    import resource
except ImportError:  # Windows: no getrusage; the samples alone give the peak
    resource = None  # type: ignore[assignment]

from memprofile.capture.base import RawCapture, RawDevice

_DEFAULT_MAX_SAMPLES = 500_000


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_vm_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int:
    if resource is None:
        return 0
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # Linux/BSD report KiB


def halve_keeping_extremes(t: array, v: array) -> tuple[array, array]:
    """Half as many points: of each pair of neighbours keep the higher one, so the
    maximum survives any number of halvings (the first point is kept as is)."""
    out_t, out_v = array("d", t[:1]), array("q", v[:1])
    for i in range(1, len(v) - 1, 2):
        j = i if v[i] >= v[i + 1] else i + 1
        out_t.append(t[j])
        out_v.append(v[j])
    if len(v) > 1 and len(v) % 2 == 0:
        out_t.append(t[-1])
        out_v.append(v[-1])
    return out_t, out_v


class HostCollector:
    name = "host"

    def __init__(
        self,
        interval_s: float = 0.005,
        reset_os_peak: bool = True,
        max_samples: int = _DEFAULT_MAX_SAMPLES,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        if max_samples < 16:
            raise ValueError(f"max_samples must be at least 16, got {max_samples!r}")
        self.interval_s = interval_s
        self.reset_os_peak = reset_os_peak
        self.max_samples = max_samples
        self._process = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t = array("d")
        self._v = array("q")
        self._halvings = 0
        self._t0 = 0.0
        self._hwm_was_reset = False
        self._maxrss_before = 0

    # The sampler thread -------------------------------------------------
    def _sample(self) -> None:
        rss = self._process.memory_info().rss
        now = time.perf_counter() - self._t0
        with self._lock:
            self._t.append(now)
            self._v.append(rss)
            if len(self._v) >= self.max_samples:
                self._t, self._v = halve_keeping_extremes(self._t, self._v)
                self._halvings += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    # Collector protocol -------------------------------------------------
    def start(self, origin: float | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("HostCollector already started")
        self._hwm_was_reset = self.reset_os_peak and _reset_vm_hwm()
        self._maxrss_before = _ru_maxrss_bytes()
        self._t0 = time.perf_counter() if origin is None else origin
        self._sample()  # the baseline, at t=0
        self._thread = threading.Thread(target=self._run, name="memprofile-host-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> RawCapture:
        if self._thread is None:
            raise RuntimeError("HostCollector.stop() called before start()")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()  # the end state, always recorded
        notes: list[tuple[str, str]] = []
        counter_peak, peak_source = self._os_peak()
        if self._halvings:
            notes.append(
                (
                    "host_samples_reduced",
                    f"host RSS samples were halved {self._halvings} time(s) to stay under "
                    f"{self.max_samples:,} points (each maximum kept)",
                )
            )
        recorded = len(self._v) << self._halvings
        capacity = psutil.virtual_memory().total
        device = RawDevice(
            name="host",
            kind="process",
            source="rss",
            t=self._t.tolist(),
            live_bytes=self._v.tolist(),
            baseline_bytes=self._v[0],
            end_bytes=self._v[-1],
            counter_peak_bytes=counter_peak,
            capacity_bytes=capacity,
            recorded_points=recorded,
        )
        return RawCapture(
            collector=self.name,
            devices=[device],
            notes=notes,
            options={
                "host_interval_ms": f"{self.interval_s * 1000:g}",
                "host_peak_from": peak_source or "the samples",
            },
        )

    def _os_peak(self) -> tuple[int | None, str]:
        if self._hwm_was_reset:
            hwm = _vm_hwm_bytes()
            if hwm is not None:
                return hwm, "the OS high-water mark (VmHWM, reset at start)"
        after = _ru_maxrss_bytes()
        if after > self._maxrss_before:
            return after, "getrusage ru_maxrss (it rose during the run)"
        return None, ""
