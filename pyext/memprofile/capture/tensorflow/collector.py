"""TensorFlowCollector: start and stop around the cell, and the detail window
over the training steps: when TF's profiler records, when it stops, and what
the run knew then. The parts it runs are the package's other modules."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from memprofile.capture import lines
from memprofile.capture.base import DETAIL_STEPS, DetailWindow, RawCapture, RawNote, wall_and_perf
from memprofile.capture.host import RssReader, StepFigures
from memprofile.capture.quiet import quiet_stderr
from memprofile.capture.steps import StepClock, register_clock, unregister_clock
from memprofile.capture.tensorflow import compat
from memprofile.capture.tensorflow.attribution import SCOPE_PREFIX, merge_worlds
from memprofile.capture.tensorflow.budget import BudgetWatcher
from memprofile.capture.tensorflow.counters import (
    ONEDNN_FIX,
    ONEDNN_NOTE,
    MemoryInfo,
    StepCounters,
    memory_info,
    onednn_allocator,
    onednn_unseen_note,
)
from memprofile.capture.tensorflow.datasets import Pipelines
from memprofile.capture.tensorflow.events import DEFAULT_MAX_EVENTS, RunStart, convert, remember_caches
from memprofile.capture.tensorflow.facts import gpu_facts
from memprofile.capture.tensorflow.keras_model import KerasWorld, address, scan
from memprofile.capture.tensorflow.patching import Patches
from memprofile.capture.tensorflow.scopes import patch_gradients, patch_scopes
from memprofile.capture.tensorflow.session import ProfilerSession
from memprofile.capture.tensorflow.step_hooks import StepHooks
from memprofile.capture.tensorflow.users_profiler import (
    USER_PROFILER,
    USER_PROFILER_NOTE,
    patch_profiler_starts,
    running_before_note,
    started_before_window_note,
    started_in_cell_note,
)
from memprofile.capture.tensorflow.xspace import parse_xspace


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
        self._clock = StepClock(self.window)  # start() sets it going
        self._running = False
        self._notes: list[RawNote] = []

    # -- Collector protocol ------------------------------------------------
    def start(self, origin: float | None = None) -> None:
        import tensorflow as tf

        if self._running:
            raise RuntimeError("TensorFlowCollector already started")
        self._tf = tf
        self._notes = []
        self._origin = origin if origin is not None else time.perf_counter()
        self._thread = threading.get_ident()
        self._profiler = ProfilerSession(tf, self._notes)
        # The user's TF profiler runs already: TF allows one session, theirs is
        # left alone, and its trace gets no allocation events a bare run's has not.
        users = compat.users_profiler_running()
        memory_start, world_start, users = self._start_profiler(users)
        # The detail: where TF's profiler records. Its memory figures at the
        # start are the detail's baseline (a later window's, when it opens).
        wall0, now_perf = wall_and_perf()
        self._start = RunStart(
            wall0=wall0,
            perf_offset=now_perf - self._origin,
            world_start=world_start,
            memory_start=memory_start,
            memory_detail_start=memory_start,
        )
        self._recording = not users
        self._window_tried = users  # no window opens while the user's profiler runs
        self._rss = RssReader()
        # Its detail_start: when a window after step 1 opened; detail_end: when the profiler stopped, and why.
        self._clock = StepClock(self.window, StepFigures(self._rss).at_step_end, self._origin)
        register_clock(self._clock)  # the live feed reads it
        if users:
            self._clock.end_detail(USER_PROFILER, at=0.0)
            self._notes.append(running_before_note())
        self._data = b""  # the detail's XSpace, once the profiler stopped
        self._world_detail_end: KerasWorld | None = None
        self._counters = StepCounters(tf, memory_start, self.reset_peak)
        self._patches = Patches()
        if self.layer_scopes:
            patch_scopes(tf, self._patches, lambda: self._recording, self._notes)
        self._gradients: list[tuple[int, int, float]] = []  # (address, id(variable), when)
        patch_gradients(tf, self._patches, lambda: self._recording, self._gradients_seen)
        self._hooks = StepHooks(tf, self._begin_step, self._end_step, self._optimizer_steps)
        self._hooks.patch(self._patches)
        self._pipelines = Pipelines()
        self._pipelines.patch(tf, self._patches)
        patch_profiler_starts(self._patches, self._before_users_profiler)
        self._detail_lock = threading.Lock()
        self._budget = BudgetWatcher(self.budget_bytes, lambda: self._recording, self._end_detail_for_budget)
        self._running = True

    def _start_profiler(self, users: bool) -> tuple[MemoryInfo, KerasWorld, bool]:
        """The CPU allocator's statistics, the counters and the namespace at the
        start, then TF's profiler unless the user's runs: (memory_start,
        world_start, whether the user's profiler runs)."""
        tf = self._tf
        profiler = self._profiler
        profiler.switch_stats_on(users)
        profiler.make_logdir()
        try:
            memory_start = memory_info(tf, reset=self.reset_peak)
            world_start = scan(self.namespace)
            if not users:
                try:
                    with quiet_stderr():
                        profiler.start()
                except tf.errors.AlreadyExistsError:  # a session Python does not show: a profiler server's capture
                    users = True
        except BaseException:
            profiler.cleanup()
            raise
        if users:
            profiler.switch_stats_off()
        return memory_start, world_start, users

    def stop(self) -> RawCapture:
        if not self._running:
            raise RuntimeError("TensorFlowCollector not started")
        unregister_clock(self._clock)
        self._running = False
        self._budget.stop()
        try:
            self._patches.undo()
            if self._recording:
                self._recording = False
                with quiet_stderr():
                    self._data = self._profiler.stop()
        finally:
            self._rss.close()
            self._profiler.cleanup()
        memory_end = memory_info(self._tf, reset=False)
        reset_note = self._counters.reset_note()
        if reset_note is not None:
            self._notes.append(reset_note)
        world = scan(self.namespace)
        if self._world_detail_end is not None:
            world.buffers = self._world_detail_end.buffers
        merge_worlds(world, self._start.world_start)
        world.pipelines.merge(self._pipelines)  # built in the run
        world.input_sizes |= self._hooks.input_sizes
        world.gradients = self._gradients
        cell = lines._last_file  # the profiled cell's code (or script): its lines are "line N"
        world.pipelines.cell_file = cell[0] if cell else None
        return self._raw(world, memory_end)

    def _raw(self, world: KerasWorld, memory_end: MemoryInfo) -> RawCapture:
        """The capture: versions, options, facts, steps, then the detail's events."""
        tf, data = self._tf, self._data
        raw = RawCapture(collector=self.name)
        raw.frameworks["tensorflow"] = str(getattr(tf, "__version__", "unknown"))
        keras = sys.modules.get("keras")
        if keras is not None:
            raw.frameworks["keras"] = str(getattr(keras, "__version__", "unknown"))
        raw.notes.extend(self._notes)
        raw.options["tf_max_events"] = str(self.max_events)
        raw.options["tf_detail_steps"] = self.window.text()
        raw.facts.update(gpu_facts(tf.config))
        raw.facts.update(self._clock.facts("tf"))
        raw.steps = self._clock.records
        if not data and not any(note[0] == USER_PROFILER_NOTE for note in self._notes):
            raw.notes.append(self._no_trace_note())
        else:
            parsed = parse_xspace(data, scope_prefix=SCOPE_PREFIX)
            self._profiler.anchor_times(parsed, data, self._start.wall0)
            convert(parsed, world, memory_end, raw, self._start, self._clock, self.max_events)
            remember_caches(raw, world)
        raw.notes.extend([n for n in self._notes if n not in raw.notes])  # said while converting
        if not any(note[0] == ONEDNN_NOTE for note in raw.notes) and onednn_allocator(os.environ):
            # Every block of the run was under 256 KiB: the allocator said nothing at all.
            raw.notes.append((ONEDNN_NOTE, onednn_unseen_note("tf:CPU:0", self._start.world_start.buffers), ONEDNN_FIX))
        return raw

    def _no_trace_note(self) -> tuple[str, str]:
        steps = self._clock.steps
        if steps and not any(s.detailed for s in self._clock.records) and self.window.first > steps:
            return (
                "tf_detail_not_reached",
                f"the cell ran {steps} training steps and the detail starts at step {self.window.first}: "
                f"TensorFlow's allocations were not recorded (--detail-steps {min(steps, 3)} records some)",
            )
        return ("tf_no_trace", "the TensorFlow profiler wrote no trace: no TF allocation is known")

    # -- the user's own TF profiler --------------------------------------------
    def _before_users_profiler(self) -> None:
        """The user starts a TF profiler in the cell: memprofile's detail ends
        here, and none opens later, so theirs starts and records the rest of
        the cell as it would bare (no allocation events of memprofile's)."""
        if not self._running:
            return
        self._window_tried = True
        recording = self._recording
        when = self._now()
        if recording:
            self._end_detail(USER_PROFILER, scan_now=threading.get_ident() == self._thread)
        self._profiler.switch_stats_off()
        if any(note[0] == USER_PROFILER_NOTE for note in self._notes):
            return
        if recording:
            self._notes.append(started_in_cell_note(when))
        elif self._clock.detail_end is None:  # the detail window had not opened yet
            self._notes.append(started_before_window_note(when, self.window.text()))

    def _gradients_seen(self, sources: Any, gradients: Any) -> None:
        """An eager tape's gradients: their buffers are their variables' gradients."""
        nest = self._tf.nest
        when = self._now()
        for variable, grad in zip(nest.flatten(sources), nest.flatten(gradients)):
            if grad is None or not isinstance(grad, self._tf.Tensor):
                continue
            addr = address(grad)
            if addr:
                self._gradients.append((addr, id(compat.keras_backing_variable(variable)), when))

    # -- training steps and the detail window ---------------------------------
    def _now(self) -> float:
        return time.perf_counter() - self._origin

    def _optimizer_steps(self, optimizer: Any) -> bool:
        """An eager `apply` of `optimizer` ends a training step: it is the clock's source, in the run."""
        return self._clock.ticks(id(optimizer)) and self._running

    def _begin_step(self) -> None:
        """The next training step starts (fit: its batch begins; a custom
        loop: the step before it ended)."""
        clock = self._clock
        step = clock.steps + 1
        if self._recording and not clock.covers(step):
            # Recording since the cell started, and the window comes later:
            # what the profiler saw is dropped and the steps before it run free.
            with self._detail_lock:
                if self._recording:  # not if the budget's watcher ended it meanwhile
                    self._recording = False
                    try:
                        with quiet_stderr():
                            self._profiler.stop(keep=False)
                    except Exception as exc:
                        self._notes.append(("tf_detail_stop_failed", f"TF's profiler failed to stop: {exc!r}"))
        elif clock.may_open(step) and not self._recording and not self._window_tried:
            self._open_window()

    def _open_window(self) -> None:
        """Start TF's profiler at the window's first step; what is live then
        is the detail's baseline, as at the start of a cell."""
        self._window_tried = True
        try:
            self._start.memory_detail_start = memory_info(self._tf, reset=False)
            self._start.world_start = scan(self.namespace)
            with quiet_stderr():
                self._profiler.start()
        except Exception as exc:  # keep counting the steps; the profile says why there is no detail
            self._notes.append(
                ("tf_detail_start_failed", f"TF's profiler could not start at step {self.window.first}: {exc!r}")
            )
            return
        self._recording = True
        self._clock.started()

    def _end_step(self) -> None:
        clock = self._clock
        record = clock.end_step(self._recording and clock.covers(clock.steps + 1))
        peaks, ends = self._counters.read()
        if peaks:
            record.peaks, record.ends = peaks, ends
        if clock.detail_end is not None and self._world_detail_end is None:  # the watcher ended it: scan here
            self._world_detail_end = scan(self.namespace)
        if self._recording and clock.window_over():
            self._end_detail("steps")

    def _end_detail_for_budget(self) -> None:
        # From the watcher's thread: the cell's thread may be changing the namespace (no scan).
        self._end_detail("budget", scan_now=False)

    def _end_detail(self, why: str, scan_now: bool = True) -> None:
        """Stop TF's profiler now and keep its XSpace for stop(): the steps
        after cost what the bare steps cost. From the cell's thread, or the
        budget's watcher (TF's profiler is the process's, not a thread's)."""
        with self._detail_lock:
            if not self._recording:
                return
            self._recording = False
            self._clock.end_detail(why)
            self._budget.stop_soon()
            try:
                with quiet_stderr():
                    self._data = self._profiler.stop()
            except Exception as exc:
                self._notes.append(("tf_detail_stop_failed", f"TF's profiler failed to stop: {exc!r}"))
        # The buffers alive at the end of the events: the variables' of now, not
        # of the cell's end (TF copies a variable it writes while it is read).
        # Not from the watcher: the cell's thread may be changing the namespace.
        if scan_now:
            self._world_detail_end = scan(self.namespace)
        if "torch" not in sys.modules:  # nothing else needs the cell lines' times now
            lines.go_fast()
