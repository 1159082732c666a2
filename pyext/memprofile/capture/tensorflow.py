"""TensorFlow/Keras: every allocation of TF's allocators, with its op, layer and kind.

How (see DESIGN.md, "What the frameworks give"):
- The TF profiler runs around the cell; its XSpace's MemoryAllocation and
  MemoryDeallocation events (capture/xspace.py) give each block's size, op,
  shape and dtype, and the allocator's own counters. TF's default CPU
  allocator ("cpu", when oneDNN is off) records nothing unless its statistics
  are on: they are switched on for the run through TF's exported
  `tsl::EnableCPUAllocatorStats` and back off afterwards. That allocator
  cannot size its blocks (it reports 0), so sizes there are the requested
  bytes; the BFC and oneDNN allocators report the rounded size as well.
- Layers: inside `model.fit`/`tf.function` the op names carry Keras's name
  scopes ("mlp_1/hidden_a_1/MatMul", "gradient_tape/...", "adam/...",
  "compile_loss/..."). Eager layer calls have no scopes in their op names, so
  `keras.layers.Layer.__call__` is wrapped for the run to open a profiler
  scope (a TraceMe) per eager call.
- Categories: variables and slots are recognised by buffer address (DLPack)
  in the namespace at start and end, and followed through the copies TF makes
  when it writes a variable that someone still reads; gradients are backward
  outputs shaped like one of their layer's trainable variables; input pipeline
  ops give inputs; forward outputs freed after backward started are
  activations; "temp" regions and anything else freed within the run are
  temporaries.
- `tf.config.experimental.get_memory_info`/`reset_memory_stats` per device for
  the allocator's own current and peak; a device or allocator where they fail
  or stay at zero is reported as unsupported, not as zero.
- Training steps: for the run `keras.Model.fit` gets a callback whose batch
  hooks begin and end a step, and outside `fit` an eager optimizer `apply` (a
  custom training loop) ends one. TF's profiler records only the detail
  window's steps (DetailWindow): it stops at the end of the window's last step
  and, for a window that starts later, is started at its first step (what it
  saw before is dropped). Every step's peak and end bytes come from the
  allocator's counters, read and reset at each step's end, where they work
  (BFC and oneDNN on CPU, GPUs; not TF's default CPU allocator, which sizes no
  block): the run's peak is the highest of those readings and the one at the end.
- The user's own TF profiler comes first (TF allows one session): one running
  before the cell is left alone and the run has no detail; one the cell starts
  (tf.profiler.experimental.start or Profile, Keras's TensorBoard callback, a
  profiler server's capture) ends the detail just before, through its Python
  entries patched for the run (tf_compat.profiler_starts). Either way the
  CPU allocator's statistics are off while theirs records, as bare, and a
  note says what the profile lacks.
"""

from __future__ import annotations

import glob
import inspect
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from memprofile.capture import lines, tf_compat
from memprofile.capture.base import (
    BEFORE_CELL,
    DETAIL_STEPS,
    AllocationLog,
    DetailWindow,
    OpRecord,
    RawCapture,
    RawNote,
)
from memprofile.capture.host import RssReader, StepFigures, heap_figures
from memprofile.capture.keras_model import KerasWorld, ScopeResolver, scan
from memprofile.capture.quiet import quiet_stderr
from memprofile.capture.tf_attribution import (
    BACKWARD_SCOPE,
    LAYER_SCOPE,
    SCOPE_PREFIX,
    Side,
    categorise,
    merge_worlds,
    module_records,
    place_allocation,
    scope_components,
)
from memprofile.capture.xspace import DTYPES, MemoryEvents, XSpaceMemory, parse_xspace, read_xspace_file
from memprofile.units import fmt_bytes

#: Work after the last training step peaking this much above every step is said.
AFTER_STEPS_BYTES = 16 << 20
#: Past this many memory events a run keeps sizes, ops and layers but not shapes and dtypes.
DEFAULT_MAX_EVENTS = 500_000
_GPU_ALLOCATOR = re.compile(r"^GPU_(\d+)_bfc$")
_TF_OOM_SHAPE = re.compile(r"OOM when allocating tensor with shape\s*\[([\d,\s]*)\] and type (\w+)")
_TF_OP = re.compile(r"\[Op:(\w+)\]|\bnode ([\w/.\-]+)")
_DTYPE_BYTES = {"float": 4, "double": 8, "half": 2, "bfloat16": 2, "int32": 4, "int64": 8, "int8": 1,
                "uint8": 1, "int16": 2, "bool": 1, "float32": 4, "float64": 8, "float16": 2}


def oom_facts(message: str) -> tuple[str | None, int | None]:
    """The op and the bytes a TF out-of-memory message names, where it does."""
    op = None
    m = _TF_OP.search(message)
    if m:
        op = m.group(1) or m.group(2)
    requested = None
    m = _TF_OOM_SHAPE.search(message)
    if m:
        n = 1
        for d in m.group(1).split(","):
            if d.strip():
                n *= int(d)
        requested = n * _DTYPE_BYTES.get(m.group(2), 4)
    return op, requested


def device_of(allocator: str) -> str:
    """TF's device of an allocator: GPU_0_bfc -> GPU:0; the CPU ones -> CPU:0."""
    m = _GPU_ALLOCATOR.match(allocator)
    if m:
        return f"GPU:{m.group(1)}"
    if allocator.startswith("gpu_host"):
        return "gpu_host"
    return "CPU:0"


def gpu_facts(config: Any, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the memory-growth and allocator suggestions need, from `tf.config`
    (a fake in tests: no GPU has run this)."""
    environ = os.environ if environ is None else environ
    facts: dict[str, str] = {}
    try:
        gpus = config.list_physical_devices("GPU")
        visible = config.get_visible_devices("GPU")
    except Exception as exc:
        return {"tf.gpus": f"unknown ({exc})"}
    facts["tf.gpus"] = str(len(gpus))
    facts["tf.visible_gpus"] = ",".join(d.name.rsplit(":", 2)[-2] + ":" + d.name.rsplit(":", 1)[-1]
                                        for d in visible) or "none"
    growth = []
    limits = []
    for gpu in gpus:
        short = ":".join(gpu.name.split(":")[-2:])
        try:
            growth.append(f"{short}={'on' if config.experimental.get_memory_growth(gpu) else 'off'}")
        except Exception:
            growth.append(f"{short}=unknown")
        try:
            for dev in config.get_logical_device_configuration(gpu) or []:
                if getattr(dev, "memory_limit", None):
                    limits.append(f"{short}={int(dev.memory_limit)}MB")
        except Exception:
            pass
    if gpus:
        facts["tf.memory_growth"] = ",".join(growth)
    if limits:
        facts["tf.memory_limit"] = ",".join(limits)
    for key in ("TF_FORCE_GPU_ALLOW_GROWTH", "TF_GPU_ALLOCATOR", "CUDA_VISIBLE_DEVICES"):
        if key in environ:
            facts[f"env.{key}"] = environ[key]
    return facts


class _CpuAllocatorStats:
    """TF's exported switch for the default CPU allocator's statistics (and
    with them its MemoryAllocation events): tf_compat.cpu_allocator_stats."""

    def __init__(self, tf: Any) -> None:
        self._switch = tf_compat.cpu_allocator_stats(tf)

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


TRACE_DIR_PREFIX = "memprofile-tf-"
#: The detail ended for the user's own TF profiler (TF allows one session): the reason and the note's code.
USER_PROFILER = "user_profiler"
USER_PROFILER_NOTE = "tf_user_profiler"
#: The TraceMe that ties a trace's relative clock to the wall clock (not a scope: no SCOPE_PREFIX).
ANCHOR = "memprofile-clock-anchor"


def _trace_parent() -> str | None:
    """Where TF writes the trace it hands over: memory (/dev/shm) where there
    is some, so the write and read back cost no disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


#: TF's profiler keeps its events in the C heap until it stops (~2.4 KB per
#: eager op), and stopping, exporting and reading them back took 3-5x that
#: growth again (TF 2.21, 120,000 tiny eager ops, the detail ended at 120 MiB
#: of growth: 457 MiB over the start with oneDNN's ops, 628 MiB with
#: TF_ENABLE_ONEDNN_OPTS=0). The detail ends when the heap has grown by
#: (budget - floor) / factor.
TF_RECORDING_FACTOR = 6
TF_PROFILER_FLOOR_BYTES = 32 << 20
TF_BUDGET_POLL_S = 0.02
#: Polls in a row of growth by small blocks only (events, tiny tensors; not
#: a model's weights or a dataset, which take blocks of their own).
TF_STEADY_POLLS = 4


class TensorFlowCollector:
    name = "tensorflow"

    def __init__(
        self,
        namespace: dict | None = None,
        max_events: int = DEFAULT_MAX_EVENTS,
        reset_peak: bool = True,
        layer_scopes: bool = True,
        detail_steps: Any = DETAIL_STEPS,
        budget_bytes: int | None = None,
    ) -> None:
        """`detail_steps`: the training steps TF's profiler records (anything
        DetailWindow.of takes); the other steps by their boundaries only.
        `budget_bytes`: the profiler's own memory; the detail ends before it."""
        self.namespace = namespace if namespace is not None else {}
        self.budget_bytes = budget_bytes
        self.max_events = max_events
        self.reset_peak = reset_peak
        self.layer_scopes = layer_scopes
        self.window = DetailWindow.of(detail_steps)
        self._running = False
        self._notes: list[RawNote] = []

    # -- Collector protocol ------------------------------------------------
    def start(self, origin: float | None = None) -> None:
        import tensorflow as tf

        if self._running:
            raise RuntimeError("TensorFlowCollector already started")
        self._tf = tf
        self._notes = []
        self._anchor_wall_ns: int | None = None  # see _anchor
        self._session_wall_ns: int | None = None  # when the last profiler session's start returned
        self._origin = origin if origin is not None else time.perf_counter()
        self._stats = _CpuAllocatorStats(tf)
        self._thread = threading.get_ident()
        # The user's TF profiler runs already: TF allows one session, theirs is
        # left alone, and its trace gets no allocation events a bare run's has not.
        users = tf_compat.users_profiler_running()
        self._stats_switched = False if users else self._stats.turn_on()
        if not self._stats.available:
            self._notes.append(("tf_compat_cpu_allocator_stats", f"TF {tf.__version__}: the CPU allocator "
                                f"statistics (tsl::EnableCPUAllocatorStats) could not be switched on: with TF's "
                                f"default CPU allocator no CPU allocation is seen"))
        # The pid in the name tells whose a left directory is (a killed kernel's, say).
        self._logdir = tempfile.mkdtemp(prefix=f"{TRACE_DIR_PREFIX}{os.getpid()}-", dir=_trace_parent())
        try:
            self._memory_start = self._memory_info(reset=self.reset_peak)
            self._world_start = scan(self.namespace)
            self._session = None
            if not users:
                try:
                    with quiet_stderr():
                        self._session = self._start_session(tf, self._logdir)
                except tf.errors.AlreadyExistsError:  # a session Python does not show: a profiler server's capture
                    users = True
        except BaseException:
            self._cleanup()
            raise
        if users:
            self._stop_cpu_allocator_stats()
        self._wall0 = time.time_ns()
        self._perf_offset = time.perf_counter() - self._origin
        # The detail: where TF's profiler records. Its memory figures at the
        # start are the detail's baseline (a later window's, when it opens).
        self._recording = not users
        self._memory_detail_start = self._memory_start
        self._detail_start: float | None = None  # when a window after step 1 opened
        self._window_tried = users  # no window opens while the user's profiler runs
        self._detail_end: tuple[float, str] | None = None  # (when, why) the profiler stopped
        if users:
            self._detail_end = (0.0, USER_PROFILER)
            self._notes.append((USER_PROFILER_NOTE, "a TensorFlow profiler was already running "
                                "(tf.profiler.experimental.start, or a profiler server's capture, started before "
                                "the cell): memprofile left it alone, as TensorFlow allows one profiler at a time, "
                                "so this profile has no TensorFlow allocation detail (ops, layers, tensor kinds, "
                                "timeline); TF's memory counters (get_memory_info), host memory, the training steps "
                                "and what the namespace keeps are measured. Stop yours before the cell for the "
                                "detail"))
        self._data = b""  # the detail's XSpace, once the profiler stopped
        self._world_detail_end: KerasWorld | None = None
        #: Each step's end: {"t_end", "detailed", "rss_end", "rss_peak", "peaks", "ends"} (RawCapture.steps).
        self._steps: list[dict[str, Any]] = []
        # Devices whose counters may work; one that reads 0 at a step's end does not.
        self._counted = [dev for dev, info in self._memory_start.items() if isinstance(info, dict)]
        #: Devices whose peak counter memprofile reset at a step (the user's reads change: said in a note).
        self._reset_counted: set[str] = set()
        self._in_fit = 0  # fit calls running: their callback counts the steps
        self._applying = False
        self._clock: int | None = None  # id() of the optimizer whose apply ends a custom loop's step
        self._rss = RssReader()
        self._figures = StepFigures(self._rss)
        self._patched = self._patch_scopes() if self.layer_scopes else []
        self._patched += self._patch_steps()
        self._patched += self._patch_profiler_starts()
        self._detail_lock = threading.Lock()
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if self.budget_bytes is not None and heap_figures() is not None:
            self._watcher = threading.Thread(target=self._watch_budget, args=(self.budget_bytes,),
                                             name="memprofile-tf-budget", daemon=True)
            self._watcher.start()
        self._running = True

    def stop(self) -> RawCapture:
        if not self._running:
            raise RuntimeError("TensorFlowCollector not started")
        self._running = False
        tf = self._tf
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join()
        try:
            self._unpatch()
            if self._recording:
                self._recording = False
                with quiet_stderr():
                    self._data = self._stop_session(tf, self._logdir)
        finally:
            self._rss.close()
            self._cleanup()
        data = self._data
        memory_end = self._memory_info(reset=False)
        if self._reset_counted:
            devices = ", ".join(sorted(self._reset_counted))
            self._notes.append(("tf_peak_reset", f"memprofile reset TF's peak counter ({devices}) at each training "
                                "step to measure each step's peak: after the cell, "
                                "tf.config.experimental.get_memory_info(...)['peak'] reads the last step's peak, "
                                "not the cell's (this profile has the cell's). --no-reset-peak "
                                "(memprofile.profile(reset_os_peak=False)) leaves it, and the OS's peak-RSS mark, "
                                "alone, without per-step TF peaks", "%%memprofile --no-reset-peak"))
        world = scan(self.namespace)
        if self._world_detail_end is not None:
            world.buffers = self._world_detail_end.buffers
        merge_worlds(world, self._world_start)
        raw = RawCapture(collector=self.name)
        raw.frameworks["tensorflow"] = str(getattr(tf, "__version__", "unknown"))
        keras = sys.modules.get("keras")
        if keras is not None:
            raw.frameworks["keras"] = str(getattr(keras, "__version__", "unknown"))
        raw.notes.extend(self._notes)
        raw.options["tf_max_events"] = str(self.max_events)
        raw.options["tf_detail_steps"] = self.window.text()
        raw.facts.update(gpu_facts(tf.config))
        raw.facts.update(self._detail_facts())
        raw.steps = self._steps
        if not data and not any(note[0] == USER_PROFILER_NOTE for note in self._notes):
            raw.notes.append(self._no_trace_note())
        else:
            parsed = parse_xspace(data, scope_prefix=SCOPE_PREFIX)
            self._anchor_times(parsed, data)
            self._convert(parsed, world, memory_end, raw)
        raw.notes.extend([n for n in self._notes if n not in raw.notes])  # said while converting
        if not any(note[0] == ONEDNN_NOTE for note in raw.notes) and _onednn_allocator(os.environ):
            # Every block of the run was under 256 KiB: the allocator said nothing at all.
            raw.notes.append((ONEDNN_NOTE, onednn_unseen_note("tf:CPU:0", self._world_start.buffers), ONEDNN_FIX))
        return raw

    def _detail_facts(self) -> dict[str, str]:
        facts = {}
        if self._detail_start is not None:
            facts["tf_detail_start_s"] = f"{self._detail_start:.3f}"
        if self._detail_end is not None:
            when, why = self._detail_end
            facts.update({"tf_detail_end_s": f"{when:.3f}", "tf_detail_why": why})
        return facts

    def _no_trace_note(self) -> tuple[str, str]:
        steps = len(self._steps)
        if steps and not any(s["detailed"] for s in self._steps) and self.window.first > steps:
            return ("tf_detail_not_reached",
                    f"the cell ran {steps} training steps and the detail starts at step {self.window.first}: "
                    f"TensorFlow's allocations were not recorded (--detail-steps {min(steps, 3)} records some)")
        return ("tf_no_trace", "the TensorFlow profiler wrote no trace: no TF allocation is known")

    def _convert(self, parsed: XSpaceMemory, world: KerasWorld, memory_end: dict[str, dict[str, int] | str],
                 raw: RawCapture) -> None:
        logs, ops = self._logs(parsed.events, world, parsed.op_types, raw)
        self._devices(logs, parsed, memory_end, raw)
        for op in ops.values():  # ops were keyed by allocator; show the device name
            log = logs.get(op.device)
            if log is not None:
                op.device = log.device
        raw.allocations = list(logs.values())
        raw.ops = list(ops.values())
        raw.modules = module_records(world, logs)

    # -- profiler session ----------------------------------------------------
    def _start_session(self, tf: Any, logdir: str) -> Any:
        """The class behind tf.profiler.experimental (no global state of its
        own to clear if the cell fails); the public API where it is missing.
        Then the session's clock anchor (see _anchor_times)."""
        cls = tf_compat.profiler_session()
        if cls is None:
            self._note_once("tf_compat_profiler_session", f"TF {tf.__version__} has no _pywrap_profiler."
                            f"ProfilerSession: TF's profiler runs through tf.profiler.experimental")
            start = tf.profiler.experimental.start
            getattr(start, "__memprofile_original__", start)(logdir)  # not as the user's (_patch_profiler_starts)
            session = None
        else:
            session = cls()
            session.start(logdir, {})
        self._session_wall_ns = time.time_ns()
        self._anchor_wall_ns = self._anchor()
        return session

    def _anchor(self) -> int | None:
        """A TraceMe at a known wall-clock time: where a trace counts its times
        from the session's start and does not say when that was (TF 2.16), the
        anchor's place in it says."""
        trace_me = tf_compat.traceme()
        if trace_me is None:
            return None
        wall = time.time_ns()
        trace_me(ANCHOR).Stop()
        return wall

    def _anchor_times(self, parsed: XSpaceMemory, data: bytes) -> None:
        """Make a trace's relative times wall-clock ns (tf_compat.relative_times),
        by the anchor; a trace without one keeps no times, and says so."""
        ev = parsed.events
        if not tf_compat.relative_times(ev.t_ns, parsed.start_ns):
            return
        anchor = self._anchor_wall_ns
        at = tf_compat.anchor_time_ns(data, ANCHOR) if anchor else None
        if anchor is None or at is None:  # when the session's start returned: later than its clock's start
            self._notes.append(("tf_compat_trace_clock", f"TF {self._tf.__version__}'s trace counts its times "
                                f"from its own start and says not when that was: TensorFlow's allocations are "
                                f"placed by when the profiler's start returned (up to its start-up time late)"))
            shift = self._session_wall_ns or self._wall0
        else:
            shift = anchor - at
        ev.t_ns = [t + shift for t in ev.t_ns]
        parsed.start_ns = shift

    def _note_once(self, code: str, message: str) -> None:
        if all(note[0] != code for note in self._notes):
            self._notes.append((code, message))

    def _stop_session(self, tf: Any, logdir: str, keep: bool = True) -> bytes:
        """Stop TF's profiler; its XSpace, or nothing when not `keep`. The
        file is removed once read: a later session writes to the same folder."""
        if self._session is not None:
            session, self._session = self._session, None
            if not keep:
                session.stop()  # TF's own serialisation, never read
                return b""
            session.export_to_tb()  # stops the session and writes the XSpace
        else:
            tf.profiler.experimental.stop(save=keep)
        files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        data = read_xspace_file(max(files, key=os.path.getmtime)) if files and keep else b""
        for f in files:
            os.remove(f)
        return data

    def _stop_cpu_allocator_stats(self) -> None:
        if self._stats_switched:
            self._stats.turn_off()
            self._stats_switched = False

    def _cleanup(self) -> None:
        self._stop_cpu_allocator_stats()
        shutil.rmtree(getattr(self, "_logdir", ""), ignore_errors=True)

    # -- the user's own TF profiler --------------------------------------------
    def _patch_profiler_starts(self) -> list[tuple[Any, str, Any]]:
        """TF allows one profiler session, and memprofile's detail is one:
        for the run, each Python entry that starts a session of the user's
        (tf_compat.profiler_starts) ends the detail first, then starts theirs.
        A module that took the wrapper by name meanwhile keeps a harmless one:
        it only calls TF's once the run is over."""
        collector = self
        patched = []

        def before_users_profiler(original: Any) -> Any:
            def users_profiler_start(*args: Any, **kwargs: Any) -> Any:
                if collector._running:
                    collector._users_profiler_starts()
                return original(*args, **kwargs)

            return _wrapped(users_profiler_start, original)

        for module, attr, original in tf_compat.profiler_starts():
            if hasattr(original, "__memprofile_original__"):
                continue
            setattr(module, attr, before_users_profiler(original))
            patched.append((module, attr, original))
        return patched

    def _users_profiler_starts(self) -> None:
        """The user starts a TF profiler in the cell: memprofile's detail ends
        here, and none opens later, so theirs starts and records the rest of
        the cell as it would bare (no allocation events of memprofile's)."""
        self._window_tried = True
        recording = self._recording
        when = self._now()
        if recording:
            self._end_detail(USER_PROFILER, scan_now=threading.get_ident() == self._thread)
        self._stop_cpu_allocator_stats()
        if any(note[0] == USER_PROFILER_NOTE for note in self._notes):
            return
        if recording:
            self._notes.append((USER_PROFILER_NOTE, f"your TensorFlow profiler started at {when:.3f} s: "
                                f"memprofile's own (TensorFlow allows one) stopped there, so yours records the "
                                f"rest of the cell in full; TensorFlow allocation detail (ops, layers, tensor "
                                f"kinds) covers the cell up to then; TF's memory counters, host memory, the "
                                f"training steps and the namespace the whole cell"))
        elif self._detail_end is None:  # the detail window had not opened yet
            self._notes.append((USER_PROFILER_NOTE, f"your TensorFlow profiler started at {when:.3f} s, before "
                                f"memprofile's detail window (steps {self.window.text()}) opened: TensorFlow "
                                f"allows one profiler, so memprofile recorded no TensorFlow allocation detail; "
                                f"TF's memory counters, host memory, the training steps and the namespace are "
                                f"measured"))

    # -- training steps and the detail window ---------------------------------
    def _now(self) -> float:
        return time.perf_counter() - self._origin

    def _begin_step(self) -> None:
        """The next training step starts (fit: its batch begins; a custom
        loop: the step before it ended)."""
        step = len(self._steps) + 1
        covered = self.window.covers(step)
        if self._recording and not covered:
            # Recording since the cell started, and the window comes later:
            # what the profiler saw is dropped and the steps before it run free.
            with self._detail_lock:
                if self._recording:  # not if the budget's watcher ended it meanwhile
                    self._recording = False
                    try:
                        with quiet_stderr():
                            self._stop_session(self._tf, self._logdir, keep=False)
                    except Exception as exc:
                        self._notes.append(("tf_detail_stop_failed", f"TF's profiler failed to stop: {exc!r}"))
        elif covered and not self._recording and self._detail_end is None and not self._window_tried:
            self._open_window()

    def _open_window(self) -> None:
        """Start TF's profiler at the window's first step; what is live then
        is the detail's baseline, as at the start of a cell."""
        self._window_tried = True
        try:
            self._memory_detail_start = self._memory_info(reset=False)
            self._world_start = scan(self.namespace)
            with quiet_stderr():
                self._session = self._start_session(self._tf, self._logdir)
        except Exception as exc:  # keep counting the steps; the profile says why there is no detail
            self._notes.append(("tf_detail_start_failed", f"TF's profiler could not start at step "
                                                          f"{self.window.first}: {exc!r}"))
            return
        self._recording = True
        self._detail_start = self._now()

    def _end_step(self) -> None:
        step = len(self._steps) + 1
        record: dict[str, Any] = {"t_end": self._now(), "detailed": self._recording and self.window.covers(step)}
        record.update(self._figures.at_step_end(force=self.window.covers(step) or self.window.covers(step + 1)))
        peaks, ends = self._read_counters()
        if peaks:
            record["peaks"], record["ends"] = peaks, ends
        self._steps.append(record)
        if self._detail_end is not None and self._world_detail_end is None:  # the watcher ended it: scan here
            self._world_detail_end = scan(self.namespace)
        if self._recording and self.window.last is not None and step >= self.window.last:
            self._end_detail("steps")

    def _end_detail(self, why: str, scan_now: bool = True) -> None:
        """Stop TF's profiler now and keep its XSpace for stop(): the steps
        after cost what the bare steps cost. From the cell's thread, or the
        budget's watcher (TF's profiler is the process's, not a thread's)."""
        with self._detail_lock:
            if not self._recording:
                return
            self._recording = False
            self._detail_end = (self._now(), why)
            self._watch_stop.set()
            try:
                with quiet_stderr():
                    self._data = self._stop_session(self._tf, self._logdir)
            except Exception as exc:
                self._notes.append(("tf_detail_stop_failed", f"TF's profiler failed to stop: {exc!r}"))
        # The buffers alive at the end of the events: the variables' of now, not
        # of the cell's end (TF copies a variable it writes while it is read).
        # Not from the watcher: the cell's thread may be changing the namespace.
        if scan_now:
            self._world_detail_end = scan(self.namespace)
        if "torch" not in sys.modules:  # nothing else needs the cell lines' times now
            lines.go_fast()

    def _watch_budget(self, budget_bytes: int) -> None:
        """A thread: when the C heap has grown by the share of the budget that
        TF's event buffers may take while recording, by small blocks poll
        after poll (events; not a model's weights or a dataset, which take
        blocks of their own), end the detail from here: whatever runs the
        loop (a function, a library, a custom loop without steps)."""
        figures = heap_figures()
        if figures is None:
            return
        start, blocks = figures
        last, steady = start, 0
        limit = max(1 << 20, (budget_bytes - TF_PROFILER_FLOOR_BYTES) // TF_RECORDING_FACTOR)
        while not self._watch_stop.wait(TF_BUDGET_POLL_S):
            now_figures = heap_figures()
            if now_figures is None:
                return
            now, now_blocks = now_figures
            if not self._recording:  # a window that starts at a later step: its growth counts from its start
                start, last, blocks, steady = now, now, now_blocks, 0
                continue
            steady = steady + 1 if now_blocks == blocks and now > last else 0
            last, blocks = now, now_blocks
            if steady >= TF_STEADY_POLLS and now - start > limit:
                try:
                    self._end_detail("budget", scan_now=False)
                except Exception:  # never into the user's process
                    pass
                return

    def _read_counters(self) -> tuple[dict[str, int], dict[str, int]]:
        """Each counted device's peak since the last step and its bytes in
        use now, by the profile's device name; the peak is reset for the next."""
        experimental = self._tf.config.experimental
        peaks: dict[str, int] = {}
        ends: dict[str, int] = {}
        if not self.reset_peak:  # the user's counter is left alone: no step's own peak to read
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
            self._reset_counted.add(dev)
            peaks[f"tf:{dev}"], ends[f"tf:{dev}"] = int(info["peak"]), int(info["current"])
        return peaks, ends

    def _counted_figures(self, name: str, unseen: int, after_steps: int, run_peak: int, raw: RawCapture) -> None:
        """The counters' figures in the profile's terms: plus the blocks from
        before the detail that the allocator does not count (oneDNN's small
        ones) and the profile does. The device's peak is at least the run's
        (model/steps.py); work after the last step above every step is said."""
        peaks = []
        for s in self._steps:
            if name in s.get("peaks", ()):
                s["peaks"][name] += unseen
                s["ends"][name] += unseen
                peaks.append(s["peaks"][name])
        raw.facts[f"{name}.counted_peak_bytes"] = run_peak + unseen
        after_steps += unseen
        if peaks and after_steps > max(peaks) + max(AFTER_STEPS_BYTES, max(peaks) // 20):
            raw.notes.append(("tf_after_steps",
                              f"{name}: after the last training step (step {len(self._steps)}) the cell peaked at "
                              f"{fmt_bytes(after_steps)} (TF's counter), above every step ({fmt_bytes(max(peaks))}); "
                              f"that work is outside the detail: --detail-steps all records it"))

    def _run_peak(self, dev: str, end: dict) -> int:
        """The device's peak over the run: its counter was reset at each step's end."""
        name = f"tf:{dev}"
        return max([end["peak"], *(s["peaks"][name] for s in self._steps if name in s.get("peaks", ()))])

    def _patch_steps(self) -> list[tuple[Any, str, Any]]:
        """Steps: `fit` runs with one more callback, whose batch hooks begin
        and end them; outside fit, an eager optimizer `apply` ends one (a
        custom loop; a traced one applies only while tracing: no steps)."""
        keras = sys.modules.get("keras")
        model_cls = getattr(keras, "Model", None)
        optimizer_cls = getattr(getattr(keras, "optimizers", None), "Optimizer", None)
        callback_cls = getattr(getattr(keras, "callbacks", None), "Callback", None)
        patched: list[tuple[Any, str, Any]] = []
        fit_owner = _defining_class(model_cls, "fit")
        if fit_owner is not None and callback_cls is not None:
            fit = fit_owner.__dict__["fit"]
            counted_fit = self._counted_fit(fit, _step_callback(callback_cls, self))
            if counted_fit is not None:
                fit_owner.fit = counted_fit
                patched.append((fit_owner, "fit", fit))
        apply_owner = _defining_class(optimizer_cls, "apply")
        if apply_owner is not None:
            apply = apply_owner.__dict__["apply"]
            if not hasattr(apply, "__memprofile_original__"):
                apply_owner.apply = self._counted_apply(apply)
                patched.append((apply_owner, "apply", apply))
        return patched

    def _counted_fit(self, fit: Any, callback: Any) -> Any:
        if hasattr(fit, "__memprofile_original__"):
            return None
        try:
            at = list(inspect.signature(fit).parameters).index("callbacks") - 1  # after self
        except (TypeError, ValueError):
            return None
        collector = self

        def counted_fit(model: Any, *args: Any, **kwargs: Any) -> Any:
            if len(args) > at:
                user = args[at]
                args = (*args[:at], _with_callback(user, callback), *args[at + 1:])
            else:
                user = kwargs.get("callbacks")
                kwargs["callbacks"] = _with_callback(user, callback)
            collector._in_fit += 1
            try:
                return fit(model, *args, **kwargs)
            finally:
                collector._in_fit -= 1
                _without_callback(user, callback)

        return _wrapped(counted_fit, fit)

    def _counted_apply(self, apply: Any) -> Any:
        collector = self
        executing_eagerly = self._tf.executing_eagerly

        def counted_apply(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            if collector._in_fit or collector._applying or not executing_eagerly():
                return apply(optimizer, *args, **kwargs)
            collector._applying = True  # an optimizer that applies through another (loss scaling): one step
            try:
                result = apply(optimizer, *args, **kwargs)
            finally:
                collector._applying = False
            if collector._clock is None:  # the first optimizer is the clock (a GAN's second steps in the same step)
                collector._clock = id(optimizer)
            if collector._clock == id(optimizer) and collector._running:
                collector._end_step()
                collector._begin_step()
            return result

        return _wrapped(counted_apply, apply)

    # -- eager layer scopes --------------------------------------------------
    def _patch_scopes(self) -> list[tuple[Any, str, Any]]:
        """Eager code has no name scopes in its op names: for the run, each
        eager Keras layer call and each eager GradientTape.gradient opens a
        profiler scope (a TraceMe) that the memory events fall inside."""
        TraceMe = tf_compat.traceme()
        if TraceMe is None:
            self._notes.append(("tf_compat_traceme", f"TF {self._tf.__version__} has no _pywrap_traceme.TraceMe: "
                                f"eager Keras layer calls are not placed on their layers (traced ones, as in "
                                f"fit, are)"))
            return []
        executing_eagerly = self._tf.executing_eagerly
        collector = self
        patched = []

        def wrap(cls: Any, method: str, name_of: Any) -> None:
            original = cls.__dict__.get(method)
            if original is None or hasattr(original, "__memprofile_original__"):
                return

            def scoped(obj: Any, *args: Any, **kwargs: Any) -> Any:
                # Traced: the op names carry the scopes; outside the detail nothing records them.
                if not collector._recording or not executing_eagerly():
                    return original(obj, *args, **kwargs)
                scope = TraceMe(SCOPE_PREFIX + name_of(obj))
                try:
                    return original(obj, *args, **kwargs)
                finally:
                    scope.Stop()

            setattr(cls, method, _wrapped(scoped, original))
            patched.append((cls, method, original))

        keras = sys.modules.get("keras")
        layer_cls = getattr(getattr(keras, "layers", None), "Layer", None)
        if layer_cls is not None:
            wrap(layer_cls, "__call__", lambda layer: f"{LAYER_SCOPE}{id(layer)}/{layer.name}")
        wrap(self._tf.GradientTape, "gradient", lambda tape: BACKWARD_SCOPE)
        return patched

    def _unpatch(self) -> None:
        for cls, method, original in reversed(self._patched):
            setattr(cls, method, original)
        self._patched = []

    # -- memory info -----------------------------------------------------------
    def _memory_info(self, reset: bool) -> dict[str, dict[str, int] | str]:
        """Per TF device: {"current", "peak"}, or why there is none."""
        tf = self._tf
        out: dict[str, dict[str, int] | str] = {}
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

    # -- events -> allocation logs --------------------------------------------
    def _logs(self, ev: MemoryEvents, world: KerasWorld, op_types: dict[str, str],
              raw: RawCapture) -> tuple[dict[str, AllocationLog], dict[str, OpRecord]]:
        """One pass over the memory events (hot: keep per-event work small)."""
        logs: dict[str, AllocationLog] = {}
        side: dict[str, Side] = {}
        ops: dict[str, OpRecord] = {}
        live: dict[tuple[str, int], int] = {}
        where: dict[tuple[str, str, str], tuple[str, str, str]] = {}  # (op, scope, thread) -> (op, layer, phase)
        shapes: dict[str, list[int] | None] = {}
        start_buffers = {b.addr: b for b in self._world_start.buffers}
        freed_before: set[int] = set()
        limit = self.max_events
        last_op = ""
        wall0, offset = self._wall0, self._perf_offset
        allocators, is_alloc, addrs, t_ns = ev.allocator, ev.is_alloc, ev.addr, ev.t_ns
        allocation, requested = ev.allocation, ev.requested
        scopes = ScopeResolver(world, [tuple(scope_components(node)[:-1]) for node in set(ev.op)])
        for i in range(len(ev)):
            allocator = allocators[i] or "cpu"
            log = logs.get(allocator)
            if log is None:
                log = logs[allocator] = AllocationLog(device=allocator, source=allocator)
                side[allocator] = Side()
            t = (t_ns[i] - wall0) / 1e9 + offset
            addr = addrs[i]
            if is_alloc[i]:
                node = ev.op[i]
                key = (node, ev.scope[i], ev.thread[i])
                place = where.get(key)
                if place is None:
                    place = where[key] = place_allocation(node, ev.scope[i], ev.thread[i], world, scopes, op_types)
                op, layer, phase = place
                size = allocation[i] or requested[i]
                text = ev.shape[i]
                if i < limit:
                    try:
                        shape = shapes[text]
                    except KeyError:
                        shape = shapes[text] = _shape(text)
                    dtype = DTYPES.get(ev.dtype[i], "")
                else:
                    shape, dtype = None, ""
                row = log.add(size, t, i, layer=layer, op=op, phase=phase, shape=shape, dtype=dtype,
                              requested=requested[i] or size)
                side[allocator].add(ev.region[i], node)
                live[(allocator, addr)] = row
                if op:
                    rec = ops.get(op)
                    if rec is None:
                        rec = ops[op] = OpRecord(op, allocator)
                    rec.calls += 1
                    rec.allocated_bytes += size
                    rec.self_allocated_bytes += size
                    if size > rec.max_alloc_bytes:
                        rec.max_alloc_bytes = size
                    last_op = op
                    if text and len(rec.input_shapes) < 3 and i < limit and text not in rec.input_shapes:
                        rec.input_shapes.append(text)
            else:
                freed = live.pop((allocator, addr), None)
                if freed is None:
                    known = start_buffers.get(addr)
                    size = allocation[i] or (known.nbytes if known else 0)
                    if known is None and not size:
                        continue  # a block from before the run, of unknown size
                    freed = log.add(size, 0.0, -1, op=BEFORE_CELL, pre_existing=True,
                                    category=known.category if known else "other",
                                    layer=known.layer if known else "",
                                    shape=known.shape if known else None, dtype=known.dtype if known else "")
                    side[allocator].add()
                    if known is not None:
                        freed_before.add(addr)
                log.t_free[freed] = t
                log.seq_free[freed] = i
        if len(ev) > limit:
            raw.notes.append(("tf_detail_dropped",
                              f"{len(ev):,} TensorFlow memory events: past the first {limit:,} the shapes and "
                              f"dtypes of tensors are not kept (the timeline, ops and layers are)"))
        raw.last_op = {"op": last_op, "layer": ""} if last_op else {}
        self._add_baseline(logs, side, start_buffers, freed_before)
        for allocator, log in logs.items():
            categorise(log, side[allocator], world, live, allocator)
        return logs, ops

    def _add_baseline(self, logs, side, start_buffers, freed_before) -> None:
        """Buffers of the namespace from before the run that are still alive."""
        for b in start_buffers.values():
            if b.addr in freed_before:
                continue
            allocator = next((a for a in logs if device_of(a) == b.device), None)
            if allocator is None:
                allocator = "cpu" if b.device.startswith("CPU") else f"GPU_{b.device.split(':')[-1]}_bfc"
                logs[allocator] = AllocationLog(device=allocator, source=allocator)
                side[allocator] = Side()
            logs[allocator].add(b.nbytes, 0.0, -1, op=BEFORE_CELL, pre_existing=True, category=b.category,
                                layer=b.layer, shape=b.shape, dtype=b.dtype)
            side[allocator].add()

    def _devices(self, logs: dict[str, AllocationLog], parsed: Any, memory_end: dict[str, dict[str, int] | str],
                 raw: RawCapture) -> None:
        """Device names, capacities, the exact baseline and the allocators' own counters."""
        ev = parsed.events
        counters: dict[str, tuple[int, int, int]] = {}  # allocator -> (max in use, max peak, capacity)
        before: dict[str, int] = {}  # allocator -> its bytes in use before its first event
        rows_of: dict[str, list[int]] = {}
        for i, a in enumerate(ev.allocator):
            rows_of.setdefault(a or "cpu", []).append(i)
        for a, rows in rows_of.items():
            first = rows[0]
            size = ev.allocation[first] or ev.requested[first]
            before[a] = ev.in_use[first] - size if ev.is_alloc[first] else ev.in_use[first] + size
            in_use, available = ev.in_use, ev.available
            caps = [in_use[i] + available[i] for i in rows if available[i]]
            counters[a] = (max(in_use[i] for i in rows), max(ev.peak_in_use[i] for i in rows), max(caps, default=0))
        taken: set[str] = set()
        for allocator, log in logs.items():
            dev = device_of(allocator)
            name = f"tf:{dev}"
            if name in taken:
                name = f"tf:{dev}/{allocator}"
            taken.add(name)
            log.device = name
            in_use, peak_counter, cap = counters.get(allocator, (0, 0, 0))
            if dev.startswith("GPU"):
                log.capacity_bytes = parsed.device_memory.get(dev) or cap or None
            start, end = self._memory_start.get(dev), memory_end.get(dev)
            detail_start = self._memory_detail_start.get(dev)
            prefix = f"{name}."
            peak = 0
            # The allocator's own {"current", "peak"} at the start, the detail's
            # start and the end; None unless it counts at all three.
            counts: tuple[dict[str, int], dict[str, int], dict[str, int]] | None = None
            if not self._memory_start:  # read from a file: there was no one to ask
                raw.facts[prefix + "memory_info"] = "not recorded"
            elif isinstance(start, dict) and isinstance(detail_start, dict) and isinstance(end, dict):
                peak = self._run_peak(dev, end)
                if peak > 0 or in_use > 0:
                    counts = (start, detail_start, end)
            if counts is not None:
                raw.facts[prefix + "memory_info_start"] = counts[0]["current"]
                raw.facts[prefix + "memory_info_end"] = counts[2]["current"]
                raw.facts[prefix + "memory_info_peak"] = peak
            # The allocator's own bytes in use when the detail started are exact:
            # what no known buffer accounts for is memory from before it.
            baseline = counts[1]["current"] if counts is not None else before.get(allocator, 0) if in_use else None
            if baseline is not None:
                known = sum(log.size[r] for r in range(len(log)) if log.pre_existing[r])
                if baseline > known:
                    log.add(baseline - known, 0.0, -1, op=BEFORE_CELL, pre_existing=True)
                # oneDNN's allocator leaves its small blocks out of its counters.
                log.baseline_exact = allocator != "mklcpu"
                if counts is not None:
                    self._counted_figures(name, max(known - baseline, 0), counts[2]["peak"], peak, raw)
                    if self._detail_end is not None:
                        # The events end with the detail: the cell's end is the counter's
                        raw.facts[f"{name}.counted_end_bytes"] = counts[2]["current"] + max(known - baseline, 0)
            if counts is None and self._memory_start:
                why = start if isinstance(start, str) else end if isinstance(end, str) else (
                    "the allocator counts 0 bytes in use")
                # Said where the device's figures are listed, not as a warning
                # on every cell: on TF's default CPU allocator it is the rule.
                raw.facts[prefix + "memory_info"] = (
                    f"unsupported for allocator {allocator!r} ({why}): the figures come from the profiler's "
                    f"events alone, and memory from before the cell is what the namespace's tensors and "
                    f"variables account for"
                )
            if allocator == "mklcpu":
                message = onednn_unseen_note(name, self._world_start.buffers)
                raw.facts[prefix + "unseen_blocks"] = message
                raw.notes.append((ONEDNN_NOTE, message))
            if peak_counter:
                raw.facts[prefix + "allocator_peak_in_use"] = peak_counter
            raw.facts[prefix + "allocator"] = allocator


#: oneDNN's CPU allocator (mklcpu) gives the profiler no event below this size.
ONEDNN_UNSEEN_BELOW = 256 << 10
ONEDNN_NOTE = "tf_onednn_small_blocks"


def _onednn_allocator(environ) -> bool:
    """TF allocates CPU memory with oneDNN's allocator: oneDNN is on (TF
    decides at import, or TF_ENABLE_ONEDNN_OPTS) and BFC was not asked for."""
    if environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true"):
        return False
    return bool(tf_compat.onednn_enabled())  # not known (None): said only where mklcpu's events show it


def onednn_unseen_note(device: str, buffers: list) -> str:
    """The warning for oneDNN's allocator. Measured (TF 2.21): its small-size
    pool emits no profiler event for blocks under 256 KiB and leaves them out
    of get_memory_info; those of the notebook's variables are known (they are
    counted from the namespace), those the cell makes are counted nowhere."""
    small = [b.nbytes for b in buffers if b.device.startswith("CPU") and 0 < b.nbytes < ONEDNN_UNSEEN_BELOW]
    known = (f" The {len(small)} variables and tensors under 256 KiB that the notebook held before the cell "
             f"({fmt_bytes(sum(small))}) are counted from its variables." if small else "")
    return (f"{device}: blocks under 256 KiB made in this cell are not counted. TensorFlow's oneDNN CPU "
            f"allocator gives the profiler no event for them, so tensors that small (biases, small activations and "
            f"gradients, optimizer temporaries) are missing from the peak, ops, layers and timeline.{known} "
            f"To see every block, set "
            f"TF_ENABLE_ONEDNN_OPTS=0 (or TF_CPU_ALLOCATOR_USE_BFC=true) before TensorFlow is imported, "
            f"e.g. in the notebook's first cell, then restart the kernel.")


# The oneDNN note's fix: TF reads the variable once, when it is imported.
ONEDNN_FIX = ('# In the notebook\'s first cell, before TensorFlow is imported; then restart the kernel\n'
              'import os\nos.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"')


def raw_from_xspace(data: bytes) -> RawCapture:
    """A capture from a saved XSpace (a GPU job's trace, say): the events
    alone, times from the first event, no namespace and no memory info."""
    parsed = parse_xspace(data, scope_prefix=SCOPE_PREFIX)
    collector = TensorFlowCollector()
    collector._wall0 = parsed.events.t_ns[0] if len(parsed.events) else 0
    collector._perf_offset = 0.0
    collector._world_start = KerasWorld()
    collector._memory_start = {}
    collector._memory_detail_start = {}
    collector._steps = []
    raw = RawCapture(collector="tensorflow-xspace")
    collector._convert(parsed, KerasWorld(), {}, raw)
    return raw


def _wrapped(wrapper: Any, original: Any) -> Any:
    """`wrapper` stands in for `original` on its class for the run, and says so."""
    wrapper.__memprofile_original__ = original
    wrapper.__wrapped__ = original
    wrapper.__name__ = getattr(original, "__name__", wrapper.__name__)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    return wrapper


def _defining_class(cls: Any, method: str) -> Any:
    """The class that defines `method` for `cls` (Keras's `fit` is its
    backend trainer's): patched there for the run and put back."""
    if cls is None:
        return None
    return next((c for c in cls.__mro__ if method in c.__dict__), None)


def _step_callback(callback_cls: Any, collector: TensorFlowCollector) -> Any:
    """The callback memprofile adds to `fit`: each batch is a training step."""

    class MemprofileSteps(callback_cls):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            collector._begin_step()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            collector._end_step()

    return MemprofileSteps()


def _is_callback_list(callbacks: Any) -> bool:
    keras = sys.modules.get("keras")
    callback_list = getattr(getattr(keras, "callbacks", None), "CallbackList", None)
    return callback_list is not None and isinstance(callbacks, callback_list)


def _with_callback(callbacks: Any, ours: Any) -> Any:
    """The user's callbacks, then ours: their batch-end work is part of the step."""
    if callbacks is None:
        return [ours]
    if _is_callback_list(callbacks):  # fit uses a CallbackList as given: ours joins it for the call
        callbacks.callbacks.append(ours)
        return callbacks
    if isinstance(callbacks, (list, tuple)):
        return [*callbacks, ours]
    return [callbacks, ours]


def _without_callback(callbacks: Any, ours: Any) -> None:
    if _is_callback_list(callbacks) and ours in callbacks.callbacks:
        callbacks.callbacks.remove(ours)


def _shape(text: str) -> list[int] | None:
    if not text or not text.startswith("["):
        return None
    try:
        return [int(d) for d in text[1:-1].split(",") if d.strip()]
    except ValueError:
        return None


