"""Process memory (resident set size) sampled by a background thread.

The framework-free collector: every profile has it, so a cell that uses no
framework still gets a real timeline. The sampler reads RSS (see RssReader) at
`interval_s` (default 5 ms, 200 Hz). The exact peak comes from the OS where it
keeps one: on Linux the VmHWM high-water mark, which is reset at start by
writing "5" to /proc/self/clear_refs (this also lowers what
`resource.getrusage().ru_maxrss` reports afterwards; pass reset_os_peak=False to
leave it alone). Elsewhere getrusage's ru_maxrss is used
when it rose during the run; without either, the sampled maximum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time
from array import array
from typing import Any

import psutil

try:
    import resource
except ImportError:  # Windows: no getrusage; the samples alone give the peak
    resource = None  # type: ignore[assignment]

from memprofile.capture import live
from memprofile.capture.base import RawCapture, RawDevice, RawNote

_DEFAULT_MAX_SAMPLES = 500_000

# Host collectors running in this process. Only the outermost one resets the
# OS high-water mark: a nested profile resetting it would blind the outer one.
_active_lock = threading.Lock()
_active = 0


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


class _StepHighWater:
    """The process's exact peak resident memory per training step, from the
    OS: read the high-water mark at a step's end and reset it for the next.
    getrusage's ru_maxrss costs ~1 µs (VmHWM from /proc/self/status ~15 µs),
    but it is the larger of the mark and a value the kernel keeps for the
    process when a thread exits (the mark then), which no reset lowers: right
    after each reset it must read no more than the resident memory, or the
    mark is read from /proc from then on (with the resident memory, ~18 µs;
    else ~9 µs a step). Only the outermost
    host collector, which reset the mark at its start, may reset it again; it
    keeps the highest value read, so its own peak stays the run's."""

    def __init__(self) -> None:
        self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
        self._status = os.open("/proc/self/status", os.O_RDONLY)
        self._rss = RssReader()
        # (made right after the collector's reset: the same check as after each)
        self._from_proc = _ru_maxrss_bytes() > self._rss.read() + (1 << 20)
        self.highest = 0
        self.resets = 0

    def _read(self) -> tuple[int, int]:
        """(the high-water mark, resident memory now)."""
        if self._from_proc:  # one read gives both
            data = os.pread(self._status, 8192, 0)
            i, j = data.index(b"VmHWM:"), data.index(b"VmRSS:")
            return (int(data[i + 6 : data.index(b"kB", i)]) * 1024, int(data[j + 6 : data.index(b"kB", j)]) * 1024)
        return _ru_maxrss_bytes(), self._rss.read()

    def read_and_reset(self) -> tuple[int, int]:
        value, now = self._read()
        os.write(self._clear, b"5")
        self.resets += 1
        if not self._from_proc and _ru_maxrss_bytes() > now + (1 << 20):
            # A thread exited holding the mark: getrusage no longer follows resets.
            self._from_proc = True
        value = max(value, now)  # the kernel's counters are per CPU, a few pages apart
        if value > self.highest:
            self.highest = value
        return value, now

    def close(self) -> None:
        os.close(self._clear)
        os.close(self._status)
        self._rss.close()


_step_high_water: _StepHighWater | None = None


def step_peak() -> tuple[int, int] | None:
    """(the process's peak resident memory since the previous call (or since
    the profile started), exact, by the OS high-water mark, which this resets;
    its resident memory now), or None where the OS keeps no mark or no
    outermost profile runs."""
    high_water = _step_high_water
    if high_water is None:
        return None
    try:
        return high_water.read_and_reset()
    except OSError:
        return None


def step_end_figures(rss: RssReader) -> dict[str, int]:
    """The process's figures at a training step's end, for RawCapture.steps:
    its exact peak in the step (rss_peak, where the OS keeps a mark), its
    resident memory (rss_end) and the heap's bytes in use (heap_end, ~1 µs:
    what the step kept, where resident memory hides it)."""
    figures: dict[str, int] = {}
    marks = step_peak()
    if marks is not None:
        figures["rss_peak"], figures["rss_end"] = marks
    else:
        figures["rss_end"] = rss.read()
    heap = heap_in_use()
    if heap is not None:
        figures["heap_end"] = heap
    return figures


#: The step figures may take about this share of a training loop's time; the
#: gap between two readings is at most MAX_FIGURES_GAP_S.
FIGURES_SHARE = 0.02
MAX_FIGURES_GAP_S = 0.01


class StepFigures:
    """step_end_figures at training steps' ends, for at most ~2 % of the
    loop's time. Reading them is a handful of system calls: ~5-10 µs alone,
    20-40 µs inside a training loop whose data fills the caches (measured
    here): a fifth of a 200 µs step. So a step shorter than ~50x what its
    reading costs is read together with the next: the reading then covers
    those steps ("steps": how many), and the OS mark gives their peak, exact
    for the group. Steps of a few ms and more are read one by one."""

    def __init__(self, rss: RssReader) -> None:
        self._rss = rss
        self._at: float | None = None  # when the last reading ended
        self._cost = 0.0  # what a reading costs (a moving average)
        self._unread = 0  # steps ended since the last reading

    def at_step_end(self, force: bool = False) -> dict[str, int]:
        """The figures at this step's end, or {} where this step is left to
        the next reading. `force`: read now (a step recorded in detail, or
        one after which the detail starts or ends and resets the OS mark)."""
        now = time.perf_counter()
        self._unread += 1
        if not force and self._at is not None and now - self._at < min(self._cost / FIGURES_SHARE, MAX_FIGURES_GAP_S):
            return {}
        figures = step_end_figures(self._rss)
        if self._unread > 1:
            figures["steps"] = self._unread
        self._unread = 0
        self._at = time.perf_counter()
        cost = self._at - now
        self._cost = cost if not self._cost else 0.75 * self._cost + 0.25 * cost
        return figures


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _load_libc() -> Any:
    """The C library, loaded once (find_library runs a subprocess each call)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _mallinfo2() -> Any:
    fn = getattr(_libc, "mallinfo2", None)  # glibc 2.33+
    if fn is None:
        return None
    fn.restype = _MallInfo2
    fn.argtypes = []
    return fn


_libc: Any = _load_libc()
_heap_info: Any = _mallinfo2()


def heap_in_use() -> int | None:
    """Bytes the C heap has handed out and not taken back (glibc's
    mallinfo2: in-use chunks of every arena plus mmapped blocks; ~1 µs), or
    None off glibc. Unlike resident memory it grows with what is allocated
    even where the heap reuses pages an earlier free left resident: a
    framework's event buffers show in it whatever ran before."""
    if _heap_info is None:
        return None
    info = _heap_info()
    return int(info.uordblks + info.hblkhd)


def heap_figures() -> tuple[int, int] | None:
    """heap_in_use and the blocks the C heap holds as mappings of their own
    (glibc's `hblks`), from one mallinfo2 call (it takes the heap's lock), or
    None off glibc. Large allocations (a tensor of megabytes) add a block
    each; small ones (a profiler's event records, tiny tensors) none."""
    if _heap_info is None:
        return None
    info = _heap_info()
    return int(info.uordblks + info.hblkhd), int(info.hblks)


def available_memory() -> int | None:
    """Bytes the OS can give without swapping (MemAvailable), or None."""
    try:
        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def release_free_memory() -> None:
    """Hand the heap memory freed after a profile back to the OS: glibc keeps
    freed small blocks (torch's event buffers are millions of them) until
    malloc_trim, and the kernel's resident memory would stay at the profile's
    high-water mark. A no-op off glibc."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


class RssReader:
    """Reads this process's resident set size, as cheaply as the OS allows.

    On Linux a kept-open /proc/self/statm read with pread costs ~4 µs, a tenth
    of psutil's ~37 µs (which opens the file each time): the sampler holds
    the GIL that much less. Elsewhere, psutil.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._page = 0
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
            self._page = os.sysconf("SC_PAGE_SIZE")
            self.read()
        except (OSError, ValueError, IndexError):
            self.close()
            self._process = psutil.Process(os.getpid())

    def read(self) -> int:
        if self._fd is not None:
            return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
        return self._process.memory_info().rss

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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


#: The longest sampling interval: a sampler that never wakes samples nothing.
MAX_INTERVAL_S = 60.0


def check_interval(interval_s: float) -> None:
    """A sampling interval a thread can wait (not inf, nan, 0 or negative)."""
    if not 0 < interval_s <= MAX_INTERVAL_S:
        raise ValueError(f"the sampling interval must be above 0 and at most {MAX_INTERVAL_S:g} s, got {interval_s!r}")


class HostCollector:
    name = "host"

    def __init__(
        self,
        interval_s: float = 0.005,
        reset_os_peak: bool = True,
        max_samples: int = _DEFAULT_MAX_SAMPLES,
    ) -> None:
        check_interval(interval_s)
        if max_samples < 16:
            raise ValueError(f"max_samples must be at least 16, got {max_samples!r}")
        self.interval_s = interval_s
        self.reset_os_peak = reset_os_peak
        self.max_samples = max_samples
        self._reader: RssReader | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t = array("d")
        self._v = array("q")
        self._halvings = 0
        self._t0 = 0.0
        self._count = 0
        self._hwm_was_reset = False
        self._hwm_before: int | None = None
        self._maxrss_before = 0
        self._step_high_water: _StepHighWater | None = None  # the one this (outermost) collector made
        self._feeds = False  # the outermost collector feeds the live feed
        self._live_max = 0  # the most resident memory since the last live sample

    # The sampler thread -------------------------------------------------
    def _sample(self) -> int:
        assert self._reader is not None, "start() opens the reader before the first sample"
        rss = self._reader.read()
        now = time.perf_counter() - self._t0
        with self._lock:
            self._t.append(now)
            self._v.append(rss)
            self._count += 1
            if len(self._v) >= self.max_samples:
                self._t, self._v = halve_keeping_extremes(self._t, self._v)
                self._halvings += 1
        return rss

    def _run(self) -> None:
        # Every ~50 ms the outermost collector hands the live feed a sample, only while a sink
        # listens (capture/live.py): the sampler is the feed's clock, no second one runs.
        due = time.perf_counter() + live.INTERVAL_S
        while not self._stop.wait(self.interval_s):
            rss = self._sample()
            if self._feeds:
                self._live_max = max(self._live_max, rss)
                now = time.perf_counter()
                if now >= due - self.interval_s / 2:  # the nearest sample to each 50 ms
                    due = max(due + live.INTERVAL_S, now + live.INTERVAL_S / 2)
                    self._feed(rss)

    def _feed_last(self) -> None:
        """The run's last sample, taken as it stops (before any collector stops): the live
        feed's last step is the profile's."""
        if self._reader is not None:
            rss = self._reader.read()
            self._feed(max(rss, self._live_max))

    def _feed(self, rss: int) -> None:
        feed = live.current()
        if feed is None or not live.listening():
            self._live_max = 0
            return
        try:
            feed.sample(time.perf_counter() - self._t0, rss, self._live_max, heap_in_use())
        except Exception:  # a live reading that fails costs that sample, never the host timeline
            pass
        self._live_max = 0

    # Collector protocol -------------------------------------------------
    def start(self, origin: float | None = None) -> None:
        global _active
        if self._thread is not None:
            raise RuntimeError("HostCollector already started")
        with _active_lock:
            outermost = _active == 0
            _active += 1
        self._feeds = outermost
        feed = live.current()
        if outermost and feed is not None:
            feed.last_sample = self._feed_last
        self._reader = RssReader()
        self._hwm_was_reset = self.reset_os_peak and outermost and _reset_vm_hwm()
        if self._hwm_was_reset and sys.platform.startswith("linux") and resource is not None:
            global _step_high_water
            try:
                _step_high_water = self._step_high_water = _StepHighWater()
            except OSError:
                _step_high_water = None
        self._hwm_before = _vm_hwm_bytes()
        self._maxrss_before = _ru_maxrss_bytes()
        self._t0 = time.perf_counter() if origin is None else origin
        self._sample()  # the baseline, at t=0
        self._thread = threading.Thread(target=self._run, name="memprofile-host-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> RawCapture:
        global _active
        if self._thread is None:
            raise RuntimeError("HostCollector.stop() called before start()")
        self._stop.set()
        try:
            self._thread.join()
        finally:  # even when interrupted: a count left up would stop every later profile resetting the peak
            self._thread = None
            with _active_lock:
                _active -= 1
        self._sample()  # the end state, always recorded
        assert self._reader is not None  # start() opened it: _thread was set
        self._reader.close()
        notes: list[RawNote] = []
        counter_peak, peak_source = self._os_peak()
        if self._halvings:
            notes.append(
                (
                    "host_samples_reduced",
                    f"host RSS samples were halved {self._halvings} time(s) to stay under "
                    f"{self.max_samples:,} points (each maximum kept)",
                )
            )
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
            recorded_points=self._count,
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
        """The exact peak from the OS, when it can be tied to this run."""
        global _step_high_water
        hwm = _vm_hwm_bytes()
        stepped = self._step_high_water  # a nested collector's stop must not take the outermost's
        self._step_high_water = None
        if stepped is not None and _step_high_water is stepped:
            _step_high_water = None
        if stepped is not None:
            stepped.close()
            if stepped.resets and hwm is not None:  # reset at each step's end: the run's is the highest read
                return max(hwm, stepped.highest), "the OS high-water mark (VmHWM, read and reset each step)"
        if hwm is not None and self._hwm_was_reset:
            return hwm, "the OS high-water mark (VmHWM, reset at start)"
        if hwm is not None and self._hwm_before is not None and hwm > self._hwm_before:
            return hwm, "the OS high-water mark (VmHWM, it rose during the run)"
        after = _ru_maxrss_bytes()
        if after > self._maxrss_before:
            return after, "getrusage ru_maxrss (it rose during the run)"
        return None, ""
