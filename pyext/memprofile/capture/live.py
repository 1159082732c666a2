"""The running cell's live feed: samples the host sampler hands over, kept and sent.

The outermost profile's host collector (capture/host.py) builds a sample every ~50 ms,
but only while a sink listens (`listening()`): with none, nothing is built or sent. A sink
is a callable the jupyter layer registers (the panel's comm, the card under the cell);
it gets each message as the comm sends it: a dict shaped as model/wire.py's LiveStartMessage,
LiveMessage and LiveEndMessage (capture is before model in the pipeline, so the dicts are
built here and the wire's codec reads them). A sender thread hands the samples to the
sinks, batched when one send is late, so that a slow sink never stalls the sampler.

What a sample holds: the process (device "host": resident memory now, the most since the
last sample, the C heap in use), each framework allocator the run uses that has a live
counter (torch CUDA when CUDA is initialized, TensorFlow's GPU), and the running training
clocks' step count and last step's peak and end (capture/steps.py). torch on CPU has no
live counter: its bytes come from the profiler's events when the run ends.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil

from memprofile.capture import steps as step_clocks
from memprofile.units import fmt_bytes

Message = dict[str, Any]
Sink = Callable[[Message], None]

#: At most this many samples are kept for a reply (a reloaded page's timeline).
MAX_SAMPLES = 1000
#: A sample every this many seconds (20 Hz).
INTERVAL_S = 0.05
#: Growth is fitted over at most this many recent step ends, and needs at least MIN_ENDS.
GROWTH_ENDS = 20
MIN_ENDS = 5
#: A fit this good (R²) is "steady".
MIN_FIT = 0.9
#: Less growth a step than this is an allocator's or the interpreter's drift, not a leak.
MIN_SLOPE = 64 << 10
#: The peak within this share of the capacity is warned of.
NEAR_SHARE = 0.10

_sinks: list[Sink] = []
_sinks_lock = threading.Lock()


def add_sink(sink: Sink) -> Callable[[], None]:
    """Send the feed's messages to `sink` too; returns what removes it."""
    with _sinks_lock:
        _sinks.append(sink)

    def remove() -> None:
        with _sinks_lock:
            if sink in _sinks:
                _sinks.remove(sink)

    return remove


def listening() -> bool:
    """A sink listens: only then are samples built."""
    return bool(_sinks)


def _send(message: Message) -> None:
    for sink in list(_sinks):
        try:
            sink(message)
        except Exception:  # a broken frontend must not stop the feed or the run
            pass


def host_capacity() -> int | None:
    """What the process may hold: the cgroup's limit where one is set, else the machine's RAM."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            return min(int(text), psutil.virtual_memory().total)
    except OSError:
        pass
    try:
        return int(psutil.virtual_memory().total)
    except Exception:
        return None


class _Frameworks:
    """The framework allocators with a live counter, read without importing or initializing anything."""

    def __init__(self) -> None:
        self._cuda_capacity: dict[int, int | None] = {}
        self._tf_gpu: bool | None = None

    def devices(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
            for i in range(cuda.device_count()):
                reserved = int(cuda.memory_reserved(i))
                if not reserved:
                    continue  # a GPU the run has not used: reading it must not make a context there
                if i not in self._cuda_capacity:
                    try:  # the device's properties make no context (mem_get_info would, on every GPU)
                        self._cuda_capacity[i] = int(cuda.get_device_properties(i).total_memory)
                    except Exception:
                        self._cuda_capacity[i] = None
                out.append(
                    _device(
                        f"cuda:{i}",
                        int(cuda.memory_allocated(i)),
                        reserved,
                        capacity=self._cuda_capacity[i],
                    )
                )
        tf = sys.modules.get("tensorflow")
        if tf is not None and self._tf_gpu is not False and _tf_initialized():
            try:
                if self._tf_gpu is None:
                    self._tf_gpu = bool(tf.config.list_physical_devices("GPU"))
                if self._tf_gpu:
                    info = tf.config.experimental.get_memory_info("GPU:0")
                    out.append(_device("GPU:0", int(info["current"]), max_in_use=int(info["peak"])))
            except Exception:  # the device is not set up yet: asked again at the next sample
                pass
        return out


def _tf_initialized() -> bool:
    """TensorFlow's eager context exists and is initialized: asking it for devices then sets
    nothing up (before, listing the GPUs would load their drivers from the sampler's thread)."""
    context = sys.modules.get("tensorflow.python.eager.context")
    ctx = context.context_safe() if context is not None else None
    return bool(getattr(ctx, "_initialized", False))


def _device(
    name: str,
    in_use: int,
    reserved: int | None = None,
    max_in_use: int | None = None,
    capacity: int | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "in_use_bytes": in_use,
        "reserved_bytes": reserved,
        "max_in_use_bytes": max_in_use if max_in_use is not None else in_use,
        "capacity_bytes": capacity,
    }


def _steps() -> tuple[int, dict[str, int], dict[str, int], bool]:
    """(steps ended, the last one's peak and end by device, the detail records now)."""
    step, peaks, ends, detail = 0, {}, {}, False
    for clock in step_clocks.running_clocks():
        records = clock.records
        detail = detail or clock.may_open(clock.steps + 1)  # this step is in the window, the detail not over
        if not records:
            continue
        step = max(step, len(records))
        last = records[-1]
        peaks.update(last.peaks)
        ends.update(last.ends)
        # short steps are read in groups: the host's figures are the last read's
        read = next((r for r in reversed(records[-64:]) if r.rss_end is not None), None)
        if read is not None:
            if read.rss_peak is not None:
                peaks["host"] = read.rss_peak
            ends["host"] = read.rss_end  # type: ignore[assignment]
    return step, peaks, ends, detail


def growth(points: list[tuple[int, int]]) -> tuple[float, float] | None:
    """(bytes per step, R²) of a least-squares line through (step, bytes), or None with fewer
    than MIN_ENDS points or no spread in the steps."""
    n = len(points)
    if n < MIN_ENDS:
        return None
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    syy = sum((p[1] - my) ** 2 for p in points)
    if sxx == 0:
        return None
    slope = sxy / sxx
    fit = 1.0 if syy == 0 else (sxy * sxy) / (sxx * syy)
    return slope, fit


def growth_warning(device: str, points: list[tuple[int, int]], capacity: int | None) -> str | None:
    """ "at +2.00 MiB per step, cuda:0 is full in about 40 steps (step 52)" where the end-of-step
    bytes rise steadily toward a known capacity."""
    fitted = growth(points)
    if fitted is None or capacity is None:
        return None
    slope, fit = fitted
    if slope < MIN_SLOPE or fit < MIN_FIT:
        return None
    step, last = points[-1]
    left = capacity - last
    steps_left = max(0, math.ceil(left / slope))
    return f"at +{fmt_bytes(slope)} per step, {device} is full in about {steps_left} steps (step {step + steps_left})"


def near_warning(device: str, peak: int, capacity: int | None) -> str | None:
    if capacity is None or capacity <= 0 or peak < (1 - NEAR_SHARE) * capacity:
        return None
    share = 100 * peak / capacity
    held = f"{fmt_bytes(peak)}, {share:.0f} % of {fmt_bytes(capacity)}"
    return f"the peak is within 10 % of {device}'s capacity ({held})"


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One sample for two neighbours: the one whose device peaks higher, each device's
    peak the higher of the two (so no peak is lost)."""

    def top(s: dict[str, Any]) -> int:
        return max((d["max_in_use_bytes"] or d["in_use_bytes"] for d in s["devices"]), default=0)

    keep, other = (a, b) if top(a) >= top(b) else (b, a)
    peaks = {d["name"]: d["max_in_use_bytes"] or d["in_use_bytes"] for d in other["devices"]}
    devices = []
    for d in keep["devices"]:
        mine = d["max_in_use_bytes"] or d["in_use_bytes"]
        devices.append({**d, "max_in_use_bytes": max(mine, peaks.get(d["name"], 0))})
    return {**keep, "devices": devices}


def decimate(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Half as many samples, peaks kept: the first sample as is, then each pair merged."""
    out = samples[:1]
    for i in range(1, len(samples) - 1, 2):
        out.append(_merge(samples[i], samples[i + 1]))
    if len(samples) > 1 and len(samples) % 2 == 0:
        out.append(samples[-1])
    return out


class LiveFeed:
    """One run's feed: its start, its samples (at most MAX_SAMPLES, peaks kept), its warnings."""

    def __init__(self, name: str, budget_bytes: int | None = None, capacity_bytes: int | None = None) -> None:
        self.run = uuid.uuid4().hex[:12]
        self.capacity_bytes = capacity_bytes
        self.start: Message = {
            "run": self.run,
            "name": name,
            "started": time.time(),
            "budget_bytes": budget_bytes,
            "capacity_bytes": capacity_bytes,
            "type": "live_start",
        }
        self.samples: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self._ends: dict[str, list[tuple[int, int]]] = {}  # step ends by device, for growth
        self._peaks: dict[str, int] = {}
        self._capacity: dict[str, int | None] = {}
        self._last_step = 0
        self._frameworks = _Frameworks()
        self._host_capacity = host_capacity()
        self._lock = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._sender: threading.Thread | None = None
        self._ended = False
        self._stopping = False  # the last sample was taken: the collectors are stopping
        self.sends = 0  # messages handed to the sinks (for tests and the benchmark)
        #: Takes the run's last sample now (the feeding host collector sets it).
        self.last_sample: Callable[[], None] | None = None

    # The sampler thread ----------------------------------------------------
    def sample(self, t: float, rss: int, rss_max: int, heap: int | None) -> None:
        """Build a sample (the host's figures given; the rest read here) and queue it to send."""
        devices = [_device("host", rss, None, max(rss, rss_max), self._host_capacity)]
        devices += self._frameworks.devices()
        step, peaks, ends, detail = _steps()
        sample = {
            "t": t,
            "clock": time.time(),
            "devices": devices,
            "step": step,
            "step_peak_bytes": peaks,
            "step_end_bytes": ends,
            "detail": detail,
            "heap_bytes": heap,
        }
        with self._lock:
            if self._ended or self._stopping:
                return
            self._pending.append(sample)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="memprofile-live-sender", daemon=True)
                self._sender.start()
            self._lock.notify()

    # The sender thread -----------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._ended:
                    self._lock.wait()
                batch, self._pending = self._pending, []
                ended = self._ended
            if batch:
                self._keep(batch)
                _send({"run": self.run, "samples": batch, "warnings": list(self.warnings), "type": "live"})
                self.sends += 1
            if ended:
                return

    def _keep(self, batch: list[dict[str, Any]]) -> None:
        for sample in batch:
            for d in sample["devices"]:
                name = d["name"]
                self._capacity.setdefault(name, d["capacity_bytes"])
                self._peaks[name] = max(self._peaks.get(name, 0), d["max_in_use_bytes"] or d["in_use_bytes"])
            if sample["step"] > self._last_step:
                self._last_step = sample["step"]
                for name, end in sample["step_end_bytes"].items():
                    ends = self._ends.setdefault(name, [])
                    ends.append((sample["step"], end))
                    del ends[:-GROWTH_ENDS]
        self.samples.extend(batch)
        while len(self.samples) > MAX_SAMPLES:
            self.samples = decimate(self.samples)
        self.warnings = self._warn()

    def capacity(self, device: str) -> int | None:
        """The device's capacity: the stated one for the peak device the run uses (its first
        framework allocator, else the host), else what was read."""
        if self.capacity_bytes is not None:
            frameworks = [n for n in self._capacity if n != "host"]
            if device == (frameworks[0] if frameworks else "host"):
                return self.capacity_bytes
        return self._capacity.get(device)

    def _warn(self) -> list[str]:
        out = []
        for device in self._capacity:
            text = growth_warning(device, self._ends.get(device, []), self.capacity(device))
            if text:
                out.append(text)
            text = near_warning(device, self._peaks.get(device, 0), self.capacity(device))
            if text:
                out.append(text)
        return out

    def stopping(self) -> None:
        """The run is about to stop its collectors: its last sample, while their clocks run."""
        if self.last_sample is not None and listening():
            self.last_sample()
        with self._lock:  # what the sampler reads while the collectors stop is not the run's
            self._stopping = True

    def end(self, profile_id: str | None) -> None:
        """The run ended and its profile is stored: flush what is queued, then say so."""
        with self._lock:
            self._ended = True
            sender = self._sender
            self._lock.notify()
        if sender is not None:
            sender.join(timeout=2.0)
        if sender is not None or listening():
            _send({"run": self.run, "profile_id": profile_id, "type": "live_end"})


_current: LiveFeed | None = None


def current() -> LiveFeed | None:
    """The feed of the run now going (the outermost profile's), or None."""
    return _current


def start_run(name: str, budget_bytes: int | None = None, capacity_bytes: int | None = None) -> LiveFeed:
    global _current
    feed = _current = LiveFeed(name, budget_bytes, capacity_bytes)
    if listening():
        _send(dict(feed.start))
    return feed


def end_run(feed: LiveFeed, profile_id: str | None) -> None:
    global _current
    if _current is feed:
        _current = None
    feed.end(profile_id)
