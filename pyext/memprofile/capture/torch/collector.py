"""The torch collector: starts and stops torch's profiler around the detail window, keeps the
training steps (capture/steps.py), and makes the RawCapture from what its parts recorded."""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from memprofile.capture.base import (
    DETAIL_STEPS,
    AllocationLog,
    DetailWindow,
    OpRecord,
    RawCapture,
    RawNote,
    wall_and_perf,
)
from memprofile.capture.host import (
    RssReader,
    StepFigures,
    heap_in_use,
    release_free_memory,
    step_peak,
)
from memprofile.capture.namespace import walk_namespace
from memprofile.capture.quiet import StderrFilter, quiet_stderr
from memprofile.capture.steps import StepClock, register_clock, unregister_clock
from memprofile.capture.torch import compat
from memprofile.capture.torch.baseline import Baseline, namespace_objects
from memprofile.capture.torch.budget import BudgetWatch
from memprofile.capture.torch.categories import Observer, categorise
from memprofile.capture.torch.cuda import cuda_facts, live_blocks_from_snapshot
from memprofile.capture.torch.hooks import ModuleHooks, watch_eagerness
from memprofile.capture.torch.layers import LayerTree
from memprofile.capture.torch.ledger import Side
from memprofile.capture.torch.records import module_records, optimizer_records
from memprofile.capture.torch.walk import walk_all
from memprofile.capture.trainers import TrainerWatch

#: Event names that mark a compiled region (dynamo's, AOTAutograd's) in torch's profiler.
_COMPILED_EVENTS = ("Torch-Compiled Region", "CompiledFunction")


def _scopes_and_graph_task(torch: Any, notes: list[RawNote]) -> tuple[tuple[Callable, Callable], Any]:
    """The profiler scope's (enter, exit) for the layer scopes, and autograd's current graph task
    (None where torch has none), each with a note where only a fallback is there."""
    scopes = compat.record_function_ops(torch)
    if scopes is None:
        scopes = compat.record_function_class(torch)
        notes.append(
            (
                "torch_compat_record_function",
                f"torch {torch.__version__} has no "
                f"_record_function_enter_new: layer scopes use record_function (slower)",
            )
        )
    task_id = compat.graph_task_id(torch)
    if task_id is None:
        notes.append(
            (
                "torch_compat_graph_task",
                f"torch {torch.__version__} has no "
                f"_current_graph_task_id: a forward recomputed by checkpointing counts as a call",
            )
        )
    return scopes, task_id


class TorchCollector:
    name = "torch"

    # Set by start() and read by the hooks and threads it starts, some of which
    # also set them: declared here so that each has one type.
    _detailed: bool  # torch's profiler is recording (see _start_detail)
    _clock: StepClock  # training steps (optimizer steps), the detail window, when the detail ended
    _hooks: ModuleHooks
    _profiler: Any  # torch's, from compat.memory_profiler; None when not recording
    _budget: BudgetWatch
    _cuda: bool
    _notes: list[RawNote]
    _undo_profiler_watch: Callable[[], None] | None  # while the detail records: other profilers end it first
    _stderr_filter: StderrFilter | None  # while the detail records

    def __init__(
        self,
        record_shapes: bool = True,
        with_stack: bool = False,
        cuda_history: bool = False,
        namespace: dict[str, Any] | None = None,
        detail_steps: DetailWindow | int | tuple[int, int | None] | None = DETAIL_STEPS,
        budget_bytes: int | None = None,
        reset_peak: bool = True,
    ) -> None:
        """`detail_steps`: training steps (optimizer steps) recorded in full
        detail: the first N, a window (first, last), or None: all; the rest
        only by their step boundaries.
        `budget_bytes`: the profiler's own memory (torch's event buffers and
        their processing) is kept under it: detail ends before it is reached."""
        self.record_shapes = record_shapes
        self.with_stack = with_stack
        self.cuda_history = cuda_history
        self.namespace = namespace if namespace is not None else {}
        self.detail_steps = DetailWindow.of(detail_steps)
        self.budget_bytes = budget_bytes
        self.reset_peak = reset_peak
        self._running = False

    # -- time ------------------------------------------------------------
    def _t(self, unix_ns: int) -> float:
        """Profiler timestamps (unix ns; measured to agree with time.time_ns())
        to seconds since the run's origin."""
        return (unix_ns - self._wall0) / 1e9 + self._perf_offset

    # -- what the hooks see ------------------------------------------------
    def _compiled_ran(self, where: str) -> None:
        """A compiled or scripted model ran: say once that its layers are one."""
        if any(code == "torch_compiled_layers" for code, *_ in self._notes):
            return
        self._notes.append(
            (
                "torch_compiled_layers",
                f"{where} ran as a compiled graph (torch.compile, "
                f"torch.jit): what it allocated is charged to it as a whole, not to the layers "
                f"inside it, which no module hook sees; run it uncompiled for a per-layer breakdown",
            )
        )

    def _user_profiler_starts(self) -> None:
        """Another torch profiler is starting in the cell (torch keeps one
        session and the new one would take memprofile's over): memprofile's
        detail ends first, so the user's profile is complete."""
        if not self._detailed:
            return
        when = time.perf_counter() - self._origin
        if threading.get_ident() != self._thread:
            self._notes.append(
                (
                    "torch_user_profiler",
                    f"a torch profiler started on another thread at "
                    f"{when:.3f} s while memprofile's recorded: torch keeps one profiler session, "
                    f"so memprofile's op, layer and kind detail may be missing",
                )
            )
            return
        self._notes.append(
            (
                "torch_user_profiler",
                f"your torch profiler started at {when:.3f} s: memprofile's "
                f"own (torch allows one) stopped there, so yours records the rest of the cell in "
                f"full; op, layer and kind detail covers the cell up to then, host memory, the "
                f"training steps and the namespace the whole cell",
            )
        )
        self._end_detail("user_profiler", in_module_hook=True)

    def _optimizer_pre_hook(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self._optimizers[id(optimizer)] = weakref.ref(optimizer)
        self._trainers.look(sys._getframe(1))  # a framework's trainer steps it (a few looks a run)
        self._steps[id(optimizer)] = self._steps.get(id(optimizer), 0) + 1
        if not self._detailed:
            return
        layers = self._param_layer
        for group in optimizer.param_groups:
            for p in group["params"]:
                self._stepped.add(id(p))
                layer = layers.get(id(p), "")
                self._observer.observe(p, "parameter", layer)
                if p.grad is not None:
                    self._observer.observe(p.grad, "gradient", layer)

    def _optimizer_post_hook(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        clock = self._clock
        ended = self._running and clock.ticks(id(optimizer))
        if ended:
            self._end_step()
        self._hooks.apply_swap()
        if not self._detailed:
            # The window starts with the next step (on the thread that runs the steps).
            if (
                ended
                and self._profiler is None
                and clock.may_open(clock.steps + 1)
                and threading.get_ident() == self._thread
            ):
                if compat.profiler_running(self._torch):
                    self._users_profiler_running()
                    return
                try:
                    self._start_detail()
                except Exception as exc:  # the run goes on, measured by its steps
                    self._profiler = None
                    self._notes.append(
                        (
                            "torch_detail_start_failed",
                            f"torch's profiler failed to start at step {clock.steps + 1}: {exc!r}",
                        )
                    )
            return
        self._observe_state(optimizer)
        if ended and clock.window_over():
            self._end_detail("steps")
        elif self._budget.over:
            self._end_detail("budget")

    # -- training steps and the detail window -------------------------------
    def _end_step(self) -> None:
        """A training step ended (the clock's optimizer stepped)."""
        record = self._clock.end_step(self._detailed)
        if self._cuda and self.reset_peak:  # exact per-step peaks from the allocator's own counters
            torch = self._torch
            for i in range(torch.cuda.device_count()):
                record.peaks[f"cuda:{i}"] = int(torch.cuda.max_memory_allocated(i))
                record.ends[f"cuda:{i}"] = int(torch.cuda.memory_allocated(i))  # what the step keeps: GPU growth
                torch.cuda.reset_peak_memory_stats(i)

    def _end_detail(self, why: str, in_module_hook: bool = False) -> None:
        """Stop torch's profiler now (on the thread that started it): the
        events so far are the detail; the rest of the run is measured by
        step boundaries (and CUDA's counters), at almost no cost."""
        if not self._detailed or threading.get_ident() != self._thread:
            return
        self._detailed = False
        self._stop_profiler_watch()
        self._budget.detail_ended()
        self._hooks.detail_ended(in_module_hook)  # in a hook, torch iterates them: changed at the next step's end
        self._clock.end_detail(why)
        from memprofile.capture import lines

        lines.set_pending(None)
        if "tensorflow" not in sys.modules:  # nothing else needs the lines' times now
            lines.go_fast()
        try:
            with quiet_stderr():
                compat.stop_memory_profiler(self._profiler)
        except Exception as exc:  # keep what there is; stop() reads it or says why not
            self._notes.append(("torch_detail_stop_failed", f"torch's profiler failed to stop: {exc!r}"))
        self._hooks.close_scopes()  # module scopes open now close with nothing recording them
        self._read_events()
        if why == "budget":  # the events took hundreds of MB: hand them back for the rest of the cell
            release_free_memory()
        step_peak()  # what stopping took is the profiler's, not the next step's
        # The heap from here on moves with what the cell keeps (the events are
        # read into logs, held to the end): its growth to the end of a step or
        # of the cell, added to the detail's last live bytes, estimates the
        # live bytes then (analysis/step_table.py).
        self._heap_after_detail: int | None = heap_in_use()

    def _stop_profiler_watch(self) -> None:
        """Undo what only the detail needs: the watch on other profilers' starts, the stderr filter."""
        undo, self._undo_profiler_watch = self._undo_profiler_watch, None
        if undo is not None:
            undo()
        stderr_filter, self._stderr_filter = self._stderr_filter, None
        if stderr_filter is not None:
            stderr_filter.stop()

    def _observe_state(self, optimizer: Any) -> None:
        layers = self._param_layer
        for p, state in optimizer.state.items():
            layer = layers.get(id(p), "")
            for v in state.values():
                if isinstance(v, self._torch.Tensor):
                    self._observer.observe(v, "optimizer_state", layer)

    # -- the namespace: what existed before, and what is known at the end ---
    # -- Collector protocol ------------------------------------------------
    def start(self, origin: float | None = None) -> None:
        import torch

        if self._running:
            raise RuntimeError("TorchCollector already started")
        self._torch = torch
        watch_eagerness(torch)
        self._undo_profiler_watch = None
        self._stderr_filter = None
        self._wall0, now_perf = wall_and_perf()
        self._perf_offset = now_perf - (now_perf if origin is None else origin)
        # Private torch APIs go through compat: a missing one is a note, not an error.
        compat_notes: list[RawNote] = []
        scopes, task_id = _scopes_and_graph_task(torch, compat_notes)
        self._layers = LayerTree()
        self._stepped: set[int] = set()  # id() of parameters an optimizer stepped
        self._optimizers: dict[int, weakref.ref] = {}
        self._steps: dict[int, int] = {}  # id(optimizer) -> steps taken in the run
        self._opt_names: dict[int, str] = {}  # id(optimizer) -> its path in the namespace
        self._param_layer: dict[int, str] = {}  # id(parameter) -> the layer that owns it
        self._origin = now_perf if origin is None else origin
        self._thread = threading.get_ident()
        self._detailed = False
        self._heap_after_detail = None
        self._rss = RssReader()
        self._clock = StepClock(self.detail_steps, StepFigures(self._rss).at_step_end, self._origin)
        register_clock(self._clock)  # the live feed reads it
        self._observer = Observer(torch)
        self._trainers = TrainerWatch()  # which framework trainer runs the steps, if one does
        self._notes = compat_notes
        self._scan_namespace(torch)
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            self._start_cuda(torch)
        self._budget = BudgetWatch(
            self.budget_bytes, self._thread, lambda: self._detailed, lambda: self._hooks.root_calls, self._end_detail
        )
        self._hooks = ModuleHooks(
            torch,
            self._layers,
            self._observer,
            self._param_layer,
            scopes,
            task_id or (lambda: -1),
            detailed=lambda: self._detailed,
            over_budget=lambda: self._budget.over,
            end_detail=self._end_detail,
            compiled_ran=self._compiled_ran,
            root_called=lambda: self._trainers.look(sys._getframe(1)),
        )
        import torch.optim.optimizer as optim

        self._handles = [
            optim.register_optimizer_step_pre_hook(self._optimizer_pre_hook),
            optim.register_optimizer_step_post_hook(self._optimizer_post_hook),
        ]
        self._profiler = None
        #: The detail's events as (logs, ops, last op) once read; the exception if they could not be.
        self._events: tuple | Exception | None = None
        self._cuda_before: dict[str, int] = {}  # bytes CUDA's allocator held before the detail (the walk)
        self._side: dict[str, Side] = {}
        self._begin(torch)
        self._running = True

    def _scan_namespace(self, torch: Any) -> None:
        """The namespace's models named, its optimizers known, its storages the baseline."""
        modules, optimizers, tensors = namespace_objects(self.namespace, torch, self._opt_names)
        self._layers.name_roots(modules, self._param_layer)
        for opt in optimizers:
            self._optimizers[id(opt)] = weakref.ref(opt)
        self._baseline = Baseline(torch)
        self._baseline.scan(modules, optimizers, tensors, self._layers.names, self._param_layer)

    def _begin(self, torch: Any) -> None:
        """The detail starts now, or waits for its window's first step, or for the user's profiler."""
        if compat.profiler_running(torch):
            self._users_profiler_running()
            self._hooks.set("ran")
        elif self._clock.may_open(1):
            try:
                self._start_detail()
            except Exception:
                self._remove_hooks()
                if self._cuda and self.cuda_history:
                    compat.cuda_history_stop(torch)
                raise
        else:  # the window starts later: nothing records until its first step
            self._detailed = False
            self._hooks.set("ran")

    def _start_cuda(self, torch: Any) -> None:
        """CUDA's counters: peaks reset, the allocation history recorded where asked for."""
        if self.reset_peak:  # else the user's counters are left alone (and the run's peak is a bound)
            for i in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(i)
        if self.cuda_history:
            try:
                compat.cuda_history_start(torch)
            except Exception as exc:  # private API: the profile goes on without the stacks
                self.cuda_history = False
                self._notes.append(
                    (
                        "torch_compat_cuda_history",
                        f"torch {torch.__version__}: CUDA's "
                        f"allocation history could not be recorded ({exc!r}): no stacks of "
                        f"live blocks at the peak",
                    )
                )

    def _start_detail(self) -> None:
        """Start torch's profiler (on the thread that runs the cell): every
        allocation and op from now until _end_detail is recorded."""
        self._profiler = compat.memory_profiler(self._torch, self.record_shapes, self.with_stack)
        # torch logs the first (and each 1000th) free of a block its profiler did
        # not see made ("Memory block of unknown size...", in red above the
        # card). memprofile accounts for those blocks (the namespace's tensors
        # from before, the allocator's baseline): a block of ours freed out of
        # sight spends that line.
        unseen = self._torch.empty(16)
        with quiet_stderr():
            self._profiler.__enter__()
            del unseen
        try:
            step_peak()  # what starting took is the profiler's, not the step's
            self._undo_profiler_watch = compat.before_profiler_starts(self._user_profiler_starts)
            # The cell freeing its tensors from before makes torch print a line
            # each 1000th free (quiet.UNKNOWN_BLOCK): filtered while recording.
            self._stderr_filter = StderrFilter()
            self._stderr_filter.start()
            self._detailed = True
            self._hooks.set("detail")
            self._clock.started()
            self._budget.start()
        except BaseException:  # torch's profiler must not keep recording for the rest of the process
            self._stop_profiler_watch()
            self._detailed = False
            self._hooks.set("none")
            with quiet_stderr():
                compat.stop_memory_profiler(self._profiler)
            self._profiler = None
            raise

    def _users_profiler_running(self) -> None:
        """A torch profiler of the user's records already: memprofile leaves
        it alone (starting its own would end the user's session) and records
        what it can without one."""
        self._clock.end_detail("user_profiler")
        self._notes.append(
            (
                "torch_user_profiler",
                "a torch profiler was already recording (torch.profiler.profile "
                "or torch.autograd.profiler, started before): memprofile left it alone, as torch allows "
                "one profiler at a time, so this profile has no op, layer or tensor-kind detail; host "
                "memory, the training steps and what the namespace keeps are measured. Stop yours "
                "before the cell for the detail",
            )
        )

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._hooks.remove()
        self._baseline.detach()

    def stop(self) -> RawCapture:
        if not self._running:
            raise RuntimeError("TorchCollector.stop() called before start()")
        unregister_clock(self._clock)
        torch = self._torch
        heap_at_end = heap_in_use()  # before stop's own work (reading events) moves it
        self._stop_recording()
        self._hooks.ran_after_detail()
        self._scan_end()
        facts: dict[str, int | float | str] = {}
        clock = self._clock
        if clock.detail_end is not None:
            when, why = clock.detail_end
            facts.update({"torch_detail_end_s": f"{when:.3f}", "torch_detail_why": why})
            if self._heap_after_detail is not None and heap_at_end is not None:
                facts.update(
                    {"cpu.heap_after_detail_bytes": self._heap_after_detail, "cpu.heap_at_end_bytes": heap_at_end}
                )
        capacities = self._stop_cuda(facts) if self._cuda else {}
        if clock.detail_start is not None:
            facts["torch_detail_start_s"] = f"{clock.detail_start:.3f}"
        users = clock.detail_end is not None and clock.detail_end[1] == "user_profiler"
        if self._profiler is None and self._events is None and not users:  # the window's first step never came
            self._notes.append(
                (
                    "torch_detail_never",
                    f"the cell ran {clock.steps} training steps: "
                    f"none in the detail window (steps {self.detail_steps.text()}), so no op, layer "
                    f"or kind detail was recorded",
                )
            )
        if self._profiler is None and self._events is None:
            self._events = ({}, {}, {})
        self._read_events()
        if isinstance(self._events, Exception):  # private API: say so, keep the rest of the profile
            return RawCapture(
                collector=self.name,
                frameworks={"torch": torch.__version__},
                trainer=self._trainers.record(self.namespace, walk_namespace),
                notes=[
                    (
                        "torch_events_unreadable",
                        f"torch's profiler events could not be read ({self._events!r}); only process memory is shown",
                    )
                ],
            )
        assert self._events is not None  # read just now, or set above where the detail never started
        logs, ops, last_op = self._events
        for device, capacity in capacities.items():
            if device in logs:
                logs[device].capacity_bytes = capacity
        return self._capture(logs, ops, last_op, facts)

    def _stop_recording(self) -> None:
        """Nothing of memprofile's runs or records once this returns."""
        self._running = False
        self._budget.stop()
        from memprofile.capture import lines

        lines.set_pending(None)
        self._stop_profiler_watch()
        try:
            if self._detailed:
                self._detailed = False
                with quiet_stderr():
                    compat.stop_memory_profiler(self._profiler)
        finally:
            self._remove_hooks()
            self._rss.close()

    def _stop_cuda(self, facts: dict[str, int | float | str]) -> dict[str, int]:
        """CUDA's counters into `facts` (and what memprofile did to them, in the notes); returns
        each device's capacity."""
        torch, clock = self._torch, self._clock
        capacities: dict[str, int] = {}
        if not self.reset_peak:
            self._notes.append(
                (
                    "cuda_peak_not_reset",
                    "CUDA's peak counters were left alone (--no-reset-peak): "
                    "the profile's CUDA peak is the counters' since their last reset, which may be "
                    "before the cell, and the steps have no CUDA peaks of their own",
                )
            )
        else:
            self._notes.append(
                (
                    "cuda_peak_reset",
                    "memprofile reset CUDA's peak counters when the cell started "
                    "and at each training step to measure each step's peak: after the cell, "
                    "torch.cuda.max_memory_allocated() reads the last step's peak, not the cell's (this "
                    "profile has the cell's). --no-reset-peak (memprofile.profile(reset_os_peak=False)) "
                    "leaves them, and the OS's peak-RSS mark, alone, without per-step CUDA peaks",
                    "%%memprofile --no-reset-peak",
                )
            )
        for i in range(torch.cuda.device_count()):
            capacity = torch.cuda.get_device_properties(i).total_memory
            capacities[f"cuda:{i}"] = capacity
            for k, v in cuda_facts(torch.cuda.memory_stats(i), capacity).items():
                facts[f"cuda:{i}.{k}"] = v
            # The counters' peak was reset each step: the run's is the highest step's.
            stepped = [s.peaks.get(f"cuda:{i}", 0) for s in clock.records if s.peaks]
            if stepped:
                facts[f"cuda:{i}.allocated_peak_bytes"] = max(stepped + [facts[f"cuda:{i}.allocated_peak_bytes"]])
            if clock.detail_end is not None:  # the events ended with the detail; the counter with the cell
                facts[f"cuda:{i}.counted_end_bytes"] = int(torch.cuda.memory_allocated(i))
        if self.cuda_history:
            try:
                for j, block in enumerate(live_blocks_from_snapshot(compat.cuda_snapshot(torch))):
                    where = " < ".join(block["stack"])
                    facts[f"cuda_live_block.{j}"] = f"{block['device']} {block['bytes']} B at {where}"
            except Exception as exc:  # private API: the rest of the profile stands
                self._notes.append(
                    (
                        "torch_compat_cuda_history",
                        f"torch {torch.__version__}: CUDA's allocation history could not be read ({exc!r})",
                    )
                )
            finally:
                compat.cuda_history_stop(torch)
        return capacities

    def _capture(
        self,
        logs: dict[str, AllocationLog],
        ops: dict[str, OpRecord],
        last_op: dict[str, str],
        facts: dict[str, int | float | str],
    ) -> RawCapture:
        """The run's RawCapture from the walked events and what the hooks and scans saw."""
        torch = self._torch
        compiled = next((name for name in ops if name.startswith(_COMPILED_EVENTS)), None)
        if compiled is not None:
            self._compiled_ran(f"code compiled by torch.compile ({compiled})")
        categorise(
            logs,
            self._side,
            self._baseline.storages,
            self._cuda_before,
            self._observer.observations,
            self._t,
            self._clock.detail_end[0] if self._clock.detail_end else None,
        )
        self._name_new_roots(logs, last_op)
        return RawCapture(
            collector=self.name,
            allocations=list(logs.values()),
            ops=list(ops.values()),
            modules=module_records(
                self._layers,
                self._hooks.ran,
                self._hooks.output_bytes,
                self._stepped,
                self._optimizers,
                self._baseline,
                torch,
            ),
            optimizers=optimizer_records(
                self._optimizers, self._opt_names, self._steps, self._param_layer, self._baseline, self.namespace, torch
            ),
            frameworks={"torch": torch.__version__},
            notes=self._notes,
            options={
                "torch_record_shapes": str(self.record_shapes).lower(),
                "torch_with_stack": str(self.with_stack).lower(),
            },
            facts=facts,
            last_op=last_op,
            input_shapes=self._hooks.input_shapes,
            steps=self._clock.records,
            trainer=self._trainers.record(self.namespace, walk_namespace),
        )

    def _read_events(self) -> None:
        """Walk torch's events into compact logs once its profiler stopped,
        and let the events go at once. At the detail's end, mid-cell: a
        stopped profiler whose events are still referenced made the process
        grow ~360 bytes per allocation for the rest of the cell (a loop of a
        million tiny allocations after a profiled transformer: +363 MB; torch
        2.13), and the logs are a fraction of the events' size."""
        if self._events is not None or self._profiler is None:
            return
        try:
            roots = compat.event_tree(self._profiler)
        except Exception as exc:
            self._events = exc
            self._drop_events()
            return
        try:
            walked = walk_all(
                roots,
                self._torch,
                record_shapes=self.record_shapes,
                with_stack=self.with_stack,
                wall0=self._wall0,
                offset=self._perf_offset,
            )
            del roots
        finally:
            self._drop_events()
        self._side, self._cuda_before = walked.side, walked.cuda_before
        self._events = (walked.logs, walked.ops, walked.last_op)

    def _scan_end(self) -> None:
        """Observe what the modules and optimizers hold at the end."""
        for name, ref in list(self._layers.modules.items()):
            module = ref()
            if module is None:
                continue
            for p in module.parameters(recurse=False):
                self._param_layer.setdefault(id(p), name)
                self._observer.observe(p, "parameter", name)
                if p.grad is not None:
                    self._observer.observe(p.grad, "gradient", name)
        for ref in list(self._optimizers.values()):
            opt = ref()
            if opt is not None:
                self._observe_state(opt)

    def _drop_events(self) -> None:
        """Let torch's event buffers go now: dropped as they are, the events
        (gigabytes, for millions) can live until the cyclic GC runs (a public
        torch.profiler.profile and its inner profiler refer to each other),
        and glibc cannot hand their memory back."""
        prof, self._profiler = getattr(self, "_profiler", None), None
        if prof is not None:
            compat.drop_events(prof)

    def _name_new_roots(self, logs: dict[str, AllocationLog], last_op: dict[str, str]) -> None:
        """Models built during the run go by the variables that hold them now
        (layers.LayerTree.new_root_names), everywhere their layers are named,
        so layers and the code rules offer use the variable."""
        renames = self._layers.new_root_names(self.namespace, self._torch)
        if not renames:
            return
        rename = self._layers.rename(renames)
        for log in logs.values():
            log.layer = [rename(n) if n else n for n in log.layer]
        self._hooks.ran = {rename(n) for n in self._hooks.ran}
        self._param_layer = {k: rename(v) for k, v in self._param_layer.items()}
        if last_op.get("layer"):
            last_op["layer"] = rename(last_op["layer"])
