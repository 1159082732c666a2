"""PyTorch: every allocation of the c10 allocators, with its op, layer and kind.

How (see DESIGN.md, "What the frameworks give"):
- `torch.profiler` with `profile_memory=True` records each alloc/free with the
  op that made it. Its event tree (`kineto_results.experimental_event_tree()`,
  private, pinned by the torch range in pyproject) is walked once; the
  FunctionEvent list that torch builds lazily is never built, which is where
  the profiler's end-to-end cost usually goes.
- Global module hooks open a `record_function` scope per module call, so every
  allocation's ancestors name its layer; backward ops inherit the layer of the
  forward op with the same autograd sequence number.
- Categories without the Python tracer: parameters, gradients and optimizer
  state are recognised by storage identity (module hooks, optimizer step hooks
  and a scan of the namespace at start and end), inputs are the root module's
  tensor arguments; of the rest, what forward allocated and backward freed (or
  what a grad-enabled forward left alive) is an activation, what was freed
  within the run a temporary, the remainder "other". Saved-tensor hooks would be
  exact for activations but break `torch.func` transforms, so they are not used.
- Memory that existed before the run: on CPU the profiler only sees blocks
  allocated while it runs, so the tensors reachable from the namespace (globals,
  `Out`, modules, optimizers, containers two levels deep) are the baseline, and
  a weakref finaliser on each storage tells when one is freed during the run.
  On CUDA the allocator's own counters give the exact baseline.
"""

from __future__ import annotations

import bisect
import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from memprofile.capture import safe_point, torch_compat
from memprofile.capture.base import (
    ALIVE,
    DETAIL_STEPS,
    AllocationLog,
    DetailWindow,
    ModuleRecord,
    OpRecord,
    RawCapture,
    RawNote,
)
from memprofile.capture.host import (
    RssReader,
    StepFigures,
    heap_figures,
    heap_in_use,
    release_free_memory,
    step_peak,
)
from memprofile.capture.namespace import has_no_memory, walk_namespace
from memprofile.capture.quiet import StderrFilter, quiet_stderr
from memprofile.capture.safe_point import SafePoint
from memprofile.capture.torch_cuda import cuda_facts, live_blocks_from_snapshot
from memprofile.capture.torch_events import (
    BEFORE_CELL,
    DDP_BUCKET_SCOPES,
    MemoryLedger,
    Side,
    add_cuda_baseline,
    add_row,
    categorise_by_time,
    charge_alloc,
)
from memprofile.model.profile import root_of

LAYER_PREFIX = "memprofile.layer/"
NOGRAD_LAYER_PREFIX = "memprofile.layer.nograd/"
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
OPTIMIZER_PREFIXES = ("Optimizer.step#", "Optimizer.zero_grad#")
#: When one storage is seen as several kinds, the first of these wins.
CATEGORY_PRIORITY = ("parameter", "optimizer_state", "gradient", "input")
_MAX_SHAPES_PER_OP = 3
_SHAPE_SAMPLE_CALLS = 3  # distinct input shapes are looked for in an op's first calls only

#: What the heap grows by while torch records is a small part of what the
#: profile costs: torch's profiler takes ~160 MB to start, stop and read back
#: whatever it recorded, and stopping it took ~16x the heap's growth while
#: recording (~2.6 KB per event node; measured on loops of tiny ops, 10,000
#: and 40,000 iterations). Detail ends when the growth reaches
#: (budget - PROFILER_FLOOR_BYTES) / 20.
PROFILER_FLOOR_BYTES = 160 << 20
RECORDING_FACTOR = 20
#: The smallest budget that can be kept.
MIN_BUDGET_BYTES = 256 << 20
#: In a loop of many statements, detail ends once the process has grown by
#: this (~25,000 small ops): reading events back costs ~25 µs each, and a loop
#: of millions of tiny ops would spend more time there than running.
MAX_RECORDING_BYTES = 12 << 20
#: The watcher's poll while the detail records. A loop of tiny ops grows the
#: buffers ~0.4 MiB a ms here, and ending takes 20x what they hold: at 20 ms
#: (80 ms of evidence) the heap had grown 32-36 MiB when the detail ended and
#: the process peaked 610-670 MiB for a 512 MiB budget; at 10 ms, 18-19 MiB
#: and 450 MiB (2,000,000 `torch.empty(64) + 1` in a function).
BUDGET_POLL_S = 0.01
#: Cells that run this many statements (line changes) or model calls are the
#: ones whose event buffers can outgrow the budget.
MANY_STATEMENTS = 20_000
MANY_CALLS = 200
#: Polls in a row in which the heap grew by small blocks only, with no model call, import or model
#: built: a loop of small ops outside the cell's lines (40 ms).
STEADY_POLLS = 4


def _never() -> bool:
    return False


#: True while torch.compile/torch.export (dynamo) or torch.jit.trace runs the
#: Python code (torch_compat.not_eager, set by start): the module hooks then
#: do nothing, so no profiler call ends up in a compiled or traced graph, and
#: dynamo never traces the collector's state. A module global, not an
#: attribute: dynamo reads it without tracking the collector object.
_not_eager = _never
#: Modules that run as one compiled or scripted graph: their layers are not
#: separated (no module hook runs inside them).
_COMPILED_MODULES = ("OptimizedModule", "RecursiveScriptModule", "TopLevelTracedModule", "ScriptModule")
#: Event names that mark a compiled region (dynamo's, AOTAutograd's) in torch's profiler.
_COMPILED_EVENTS = ("Torch-Compiled Region", "CompiledFunction")


def _users_code(frame: Any) -> Any:
    """The code object a thread runs now, where it is neither torch's nor
    memprofile's (a loop of the user's, whose ops are C calls), else None."""
    if frame is None:
        return None
    name = frame.f_code.co_filename
    return None if safe_point.TORCH_CODE in name or name.startswith(safe_point.OWN_CODE) else frame.f_code


def _nbytes(t: Any) -> int:
    try:
        return t.untyped_storage().nbytes()
    except Exception:  # storage-less tensors
        return 0


def _own_bytes(t: Any) -> int:
    """A tensor's bytes in its storage: the storage's, unless the tensor is a
    slice of a larger one (DDP's gradient_as_bucket_view makes each gradient a
    view of a bucket that several layers share: each layer has its slice)."""
    whole = _nbytes(t)
    return min(whole, t.nelement() * t.element_size()) if t.is_contiguous() else whole


class _Storage:
    """What we know of one storage seen outside the profiler's events."""

    __slots__ = ("ptr", "nbytes", "device", "category", "shape", "dtype", "freed_ns", "layer")

    def __init__(self, ptr: int, nbytes: int, device: str, category: str, shape: list[int], dtype: str,
                 layer: str = ""):
        self.ptr, self.nbytes, self.device = ptr, nbytes, device
        self.category, self.shape, self.dtype = category, shape, dtype
        self.freed_ns: int | None = None
        self.layer = layer  # the module owning the parameter (its gradient, its optimizer state)


_RANK = {c: i for i, c in enumerate(CATEGORY_PRIORITY)}


def _better(new: str, old: str) -> bool:
    """Whether `new` names a storage's kind better than `old` (called per observation)."""
    return _RANK.get(new, len(_RANK)) < _RANK.get(old, len(_RANK))


class TorchCollector:
    name = "torch"

    # Set by start() and read by the hooks and threads it starts, some of which
    # also set them: declared here so that each has one type.
    _detailed: bool  # torch's profiler is recording (see _start_detail)
    _detail_end: tuple[float, str] | None  # (when, why) the detail ended
    _over_budget: bool
    _root_calls: int
    _modules_built: int  # modules, parameters and buffers registered while the budget is watched
    _build_handles: list[Any]
    _clock: int | None  # id() of the optimizer whose steps are the training steps
    _hook_swap: str | None  # the module hooks to change to at the next step's end
    _idle_trees: set[str]
    _profiler: Any  # torch's, from torch_compat.memory_profiler; None when not recording
    _watcher: threading.Thread | None
    _watch_stop: threading.Event
    _figures: StepFigures
    _cuda: bool
    _notes: list[RawNote]
    _undo_profiler_watch: Callable[[], None] | None  # while the detail records: other profilers end it first
    _stderr_filter: StderrFilter | None  # while the detail records
    _undo_warning_filter: Callable[[], None] | None  # while global module hooks are registered

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
    def _observe(self, tensor: Any, category: str, layer: str = "") -> None:
        try:
            if has_no_memory(tensor):
                return
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if not ptr:
                return
            self._observations.append(
                (ptr, time.time_ns(), category, list(tensor.shape), str(tensor.dtype).replace("torch.", ""),
                 str(tensor.device), storage.nbytes(), layer)
            )
        except Exception:  # meta/fake/sparse tensors have no storage to match
            return

    def _observe_all(self, value: Any, category: str, depth: int = 1) -> None:
        torch = self._torch
        if isinstance(value, torch.Tensor):
            self._observe(value, category)
        elif depth > 0 and isinstance(value, list | tuple):
            for v in value:
                self._observe_all(v, category, depth - 1)
        elif depth > 0 and isinstance(value, dict):
            for v in value.values():
                self._observe_all(v, category, depth - 1)

    def _stack(self) -> list:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _qualname(self, module: Any, parent: Any | None) -> str:
        key = id(module)
        name = self._names.get(key)
        if name is not None:
            return name
        if parent is None:
            name = type(module).__name__
        else:
            pname = self._names[id(parent)]
            attr = next((k for k, v in parent._modules.items() if v is module), None)
            local = attr if attr is not None else f"<{type(module).__name__}>"
            name = self._child_name(pname, local) if id(parent) in self._roots else f"{pname}.{local}"
            self._parents.setdefault(name, pname)
        if parent is None:
            self._roots.add(key)
        self._register_module(module, name, self._parents.get(name))
        return name

    def _child_name(self, root: str, local: str) -> str:
        """A root's children go by their own names (`encoder.layers.3`), unless
        another model in the notebook already has a module of that name: then
        they carry their root's (`critic.encoder.layers.3`)."""
        owner = self._parents.get(local)
        if local in self._modules and owner is not None and owner.split(".", 1)[0] != root:
            return f"{root}.{local}"
        return local

    def _register_module(self, module: Any, name: str, parent: str | None) -> None:
        self._names[id(module)] = name
        self._modules.setdefault(name, weakref.ref(module))
        self._types.setdefault(name, type(module).__name__)
        if parent is not None:
            self._parents.setdefault(name, parent)

    def _ran_hook(self, module: Any, args: tuple) -> None:
        """Outside the detail the only module hook: which trees worked (a
        model that ran only there still gets its advice). It goes once every
        tree known has run: any global module hook sends every module call
        through torch's slow path (~14 µs a call here, more than a small
        model's step spends in its layers)."""
        if _not_eager():
            return
        key = id(module)
        if key in self._ran_ids:
            return
        self._ran_ids.add(key)
        name = self._names.get(key)
        if name is not None:
            self._idle_trees.discard(root_of(name, self._parents))
            if not self._idle_trees:
                self._hook_swap = "none"

    def _forward_pre_hook(self, module: Any, args: tuple) -> None:
        if _not_eager():  # first: dynamo and the JIT tracer see nothing else of the hook
            return
        if not self._detailed:  # the detail ended in a hook: cheap hooks from the next step
            self._ran_hook(module, args)
            return
        if self._over_budget:
            self._end_detail("budget", in_module_hook=True)
            return
        stack = self._stack()
        parent = stack[-1][0] if stack else None
        name = self._qualname(module, parent)
        self._ran.add(name)
        # A forward that backward runs again (checkpoint recomputation) is not
        # a call of the model: its arguments are no inputs.
        if parent is None and self._graph_task_id() == -1:
            self._root_calls += 1
            self._observe_all(args, "input", depth=2)
            if len(self._input_shapes) < 8:
                for a in args:
                    if isinstance(a, self._torch.Tensor) and list(a.shape) not in self._input_shapes:
                        self._input_shapes.append(list(a.shape))
        if id(module) not in self._params_seen:
            self._params_seen.add(id(module))
            if type(module).__name__ in _COMPILED_MODULES:
                self._compiled_ran(f"{name} ({type(module).__name__})")
            for p in module.parameters(recurse=False):
                self._param_layer.setdefault(id(p), name)
                self._observe(p, "parameter", name)
            for b in module.buffers(recurse=False):
                self._observe(b, "parameter", name)
        prefix = LAYER_PREFIX if self._torch.is_grad_enabled() else NOGRAD_LAYER_PREFIX
        # The ops behind torch.autograd.profiler.record_function, called
        # directly: the class adds CUPTI and torch-function checks per call.
        stack.append((module, self._scope_enter(prefix + name, None)))

    def _forward_hook(self, module: Any, args: tuple, output: Any) -> None:
        if _not_eager():
            return
        stack = self._stack()
        if not any(m is module for m, _ in stack):
            return  # its forward began before the profiler did
        self._output_bytes[id(module)] = self._tensor_bytes(output)
        while stack:  # pop to this module, closing scopes a failed forward left open
            m, scope = stack.pop()
            self._scope_exit(scope)
            if m is module:
                break

    def _compiled_ran(self, where: str) -> None:
        """A compiled or scripted model ran: say once that its layers are one."""
        if any(code == "torch_compiled_layers" for code, *_ in self._notes):
            return
        self._notes.append(("torch_compiled_layers", f"{where} ran as a compiled graph (torch.compile, "
                            f"torch.jit): what it allocated is charged to it as a whole, not to the layers "
                            f"inside it, which no module hook sees; run it uncompiled for a per-layer breakdown"))

    def _user_profiler_starts(self) -> None:
        """Another torch profiler is starting in the cell (torch keeps one
        session and the new one would take memprofile's over): memprofile's
        detail ends first, so the user's profile is complete."""
        if not self._detailed:
            return
        when = time.perf_counter() - self._origin
        if threading.get_ident() != self._thread:
            self._notes.append(("torch_user_profiler", f"a torch profiler started on another thread at "
                                f"{when:.3f} s while memprofile's recorded: torch keeps one profiler session, "
                                f"so memprofile's op, layer and kind detail may be missing"))
            return
        self._notes.append(("torch_user_profiler", f"your torch profiler started at {when:.3f} s: memprofile's "
                            f"own (torch allows one) stopped there, so yours records the rest of the cell in "
                            f"full; op, layer and kind detail covers the cell up to then, host memory, the "
                            f"training steps and the namespace the whole cell"))
        self._end_detail("user_profiler", in_module_hook=True)

    def _tensor_bytes(self, value: Any) -> int:
        Tensor = self._torch.Tensor
        if isinstance(value, Tensor):
            return value.nelement() * value.element_size()
        if isinstance(value, tuple | list):
            return sum(v.nelement() * v.element_size() for v in value if isinstance(v, Tensor))
        if isinstance(value, dict):
            return sum(v.nelement() * v.element_size() for v in value.values() if isinstance(v, Tensor))
        return 0

    def _optimizer_pre_hook(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self._optimizers[id(optimizer)] = weakref.ref(optimizer)
        self._steps[id(optimizer)] = self._steps.get(id(optimizer), 0) + 1
        if not self._detailed:
            return
        layers = self._param_layer
        for group in optimizer.param_groups:
            for p in group["params"]:
                self._stepped.add(id(p))
                layer = layers.get(id(p), "")
                self._observe(p, "parameter", layer)
                if p.grad is not None:
                    self._observe(p.grad, "gradient", layer)

    def _optimizer_post_hook(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        ended = self._running and (self._clock is None or self._clock == id(optimizer))
        if ended:
            self._end_step(optimizer)
        if self._hook_swap is not None:
            self._set_module_hooks(self._hook_swap)
        if not self._detailed:
            # The window starts with the next step (on the thread that runs the steps).
            if ended and self._profiler is None and self._detail_end is None \
                    and self.detail_steps.covers(len(self._step_log) + 1) \
                    and threading.get_ident() == self._thread:
                if torch_compat.profiler_running(self._torch):
                    self._users_profiler_running()
                    return
                try:
                    self._start_detail()
                except Exception as exc:  # the run goes on, measured by its steps
                    self._profiler = None
                    self._notes.append(("torch_detail_start_failed", f"torch's profiler failed to start at step "
                                        f"{len(self._step_log) + 1}: {exc!r}"))
            return
        self._observe_state(optimizer)
        if ended and not self.detail_steps.covers(len(self._step_log) + 1):
            self._end_detail("steps")
        elif self._over_budget:
            self._end_detail("budget")

    # -- training steps and the detail window -------------------------------
    def _end_step(self, optimizer: Any) -> None:
        """A training step ended: the first optimizer stepped is the clock (a
        GAN's second optimizer steps in the same step)."""
        self._clock = id(optimizer)
        record: dict[str, Any] = {"t_end": time.perf_counter() - self._origin, "detailed": self._detailed}
        # Read at every detailed step, and at the one before the detail starts (which resets the OS mark).
        record.update(self._figures.at_step_end(
            force=self._detailed or (self._detail_end is None and self.detail_steps.covers(len(self._step_log) + 2))))
        if self._cuda and self.reset_peak:  # exact per-step peaks from the allocator's own counters
            torch = self._torch
            peaks, ends = {}, {}
            for i in range(torch.cuda.device_count()):
                peaks[f"cuda:{i}"] = int(torch.cuda.max_memory_allocated(i))
                ends[f"cuda:{i}"] = int(torch.cuda.memory_allocated(i))  # what the step keeps: growth on the GPU
                torch.cuda.reset_peak_memory_stats(i)
            record["peaks"], record["ends"] = peaks, ends
        self._step_log.append(record)

    def _end_detail(self, why: str, in_module_hook: bool = False) -> None:
        """Stop torch's profiler now (on the thread that started it): the
        events so far are the detail; the rest of the run is measured by
        step boundaries (and CUDA's counters), at almost no cost."""
        if not self._detailed or threading.get_ident() != self._thread:
            return
        self._detailed = False
        self._stop_profiler_watch()
        self._safe_point.close()
        self._stop_watching_building()
        self._idle_trees = self._trees_not_run()
        if in_module_hook:  # torch is iterating the hooks: change them at the next step's end
            self._hook_swap = "ran"
        else:
            self._set_module_hooks("ran")
        self._watch_stop.set()
        self._detail_end = (time.perf_counter() - self._origin, why)
        from memprofile.capture import lines

        lines.set_pending(None)
        if "tensorflow" not in sys.modules:  # nothing else needs the lines' times now
            lines.go_fast()
        try:
            with quiet_stderr():
                torch_compat.stop_memory_profiler(self._profiler)
        except Exception as exc:  # keep what there is; stop() reads it or says why not
            self._notes.append(("torch_detail_stop_failed", f"torch's profiler failed to stop: {exc!r}"))
        self._close_scopes()  # module scopes open now close with nothing recording them
        self._read_events()
        if why == "budget":  # the events took hundreds of MB: hand them back for the rest of the cell
            release_free_memory()
        step_peak()  # what stopping took is the profiler's, not the next step's
        # The heap from here on moves with what the cell keeps (the events are
        # read into logs, held to the end): its growth to the end of a step or
        # of the cell, added to the detail's last live bytes, estimates the
        # live bytes then (model/steps.py).
        self._heap_after_detail: int | None = heap_in_use()

    def _stop_profiler_watch(self) -> None:
        """Undo what only the detail needs: the watch on other profilers' starts, the stderr filter."""
        undo, self._undo_profiler_watch = self._undo_profiler_watch, None
        if undo is not None:
            undo()
        stderr_filter, self._stderr_filter = self._stderr_filter, None
        if stderr_filter is not None:
            stderr_filter.stop()

    def _watch_budget(self, budget_bytes: int) -> None:
        """A thread: when the heap has grown by the share of the budget that
        torch's event buffers may take while recording, end the detail on the
        cell's thread: at its next statement (lines' marks), model call
        (module hooks), or, on the main thread, at its next bytecode outside
        memprofile's and torch's hook code (capture/safe_point.py), which is
        what reaches a loop in a function from another cell, a module, a
        library or a script. The heap's bytes in use, not resident memory: a
        heap reusing pages that an earlier run freed (and glibc kept) grows
        without the process growing, and stopping torch's profiler then costs
        ~16x what the buffers grew by."""
        from memprofile.capture import lines

        reader = RssReader()

        def measure() -> tuple[int, int | None]:  # bytes, and the heap's own mapped blocks where known
            figures = heap_figures()
            return figures if figures is not None else (reader.read(), None)

        try:
            start, mapped = measure()
            last = start
            steady = 0  # polls in a row of small allocations only, with no model call, import or model built
            imported, built = len(sys.modules), self._modules_built
            limit = max(1 << 20, (budget_bytes - PROFILER_FLOOR_BYTES) // RECORDING_FACTOR)
            looping = None  # the code the cell's thread ran at the last poll, where it is the user's own
            while not self._watch_stop.wait(BUDGET_POLL_S) and self._detailed:
                now, blocks = measure()
                state = blocks, len(sys.modules), self._modules_built
                # A loop of small ops sits in the user's code poll after poll (its ops are C calls);
                # a library setting up (DDP's constructor broadcasting, gloo's buffers) runs its own.
                here = _users_code(safe_point.thread_frame(self._thread))
                small_only = (blocks is not None and state == (mapped, imported, built) and self._root_calls == 0
                              and here is not None and here is looping)
                steady = steady + 1 if small_only and now > last else 0
                last, (mapped, imported, built), looping = now, state, here
                # The growth is the buffers' only where the code runs many
                # small ops: many statements of the cell, many model calls, or,
                # where no model is called (a loop in a function from another
                # cell, a module, a script), a heap that grows poll after poll
                # by small blocks only, while no module is imported and no model
                # built. A model whose activations take gigabytes in a few
                # calls, or weights loaded or built, have few events.
                tight = lines.recorded_marks() > MANY_STATEMENTS or steady >= STEADY_POLLS
                many = tight or self._root_calls > MANY_CALLS
                if many and now - start > (min(limit, MAX_RECORDING_BYTES) if tight else limit):
                    self._over_budget = True
                    lines.set_pending(lambda: self._end_detail("budget"))
                    break
            # ask the cell's thread until it has ended the detail (a request
            # that lands in memprofile's or torch's hook code does nothing)
            while self._over_budget and self._detailed and not self._watch_stop.is_set():
                self._safe_point.request()
                self._watch_stop.wait(BUDGET_POLL_S)
        finally:
            reader.close()

    def _watch_building(self) -> None:
        """Count modules, parameters and buffers registered while the detail
        records (a model being built, its weights loaded into it): the watcher
        does not take that growth for a loop of small ops. torch 2.0+; without
        these hooks the count never moves and only the heap's own signs remain."""
        import torch.nn.modules.module as hooks

        def built(*_args: Any) -> None:
            self._modules_built += 1

        for name in ("register_module_module_registration_hook", "register_module_parameter_registration_hook",
                     "register_module_buffer_registration_hook"):
            register = getattr(hooks, name, None)
            if register is not None:
                self._build_handles.append(register(built))

    def _stop_watching_building(self) -> None:
        handles, self._build_handles = self._build_handles, []
        for handle in handles:
            handle.remove()

    def _end_detail_at_safe_point(self) -> None:
        if self._over_budget and self._detailed:
            self._end_detail("budget", in_module_hook=True)

    def _observe_state(self, optimizer: Any) -> None:
        layers = self._param_layer
        for p, state in optimizer.state.items():
            layer = layers.get(id(p), "")
            for v in state.values():
                if isinstance(v, self._torch.Tensor):
                    self._observe(v, "optimizer_state", layer)

    # -- the namespace: what existed before, and what is known at the end ---
    def _namespace_objects(self) -> tuple[list[tuple[str, Any]], list[Any], list[Any]]:
        torch = self._torch
        modules: list[tuple[str, Any]] = []
        optimizers: list[Any] = []
        tensors: list[Any] = []

        def take(variable: str, path: str, value: Any, via: str) -> bool:
            if isinstance(value, torch.Tensor):
                tensors.append(value)
            elif isinstance(value, torch.nn.Module):
                modules.append((variable, value))
            elif isinstance(value, torch.optim.Optimizer):
                optimizers.append(value)
                self._opt_names.setdefault(id(value), path)
            else:
                return False
            return True

        walk_namespace(self.namespace, take)
        return modules, optimizers, tensors

    def _name_roots(self, modules: list[tuple[str, Any]]) -> None:
        """Qualified names for every module reachable from the namespace; the
        largest root names a submodule also bound to its own variable."""
        unique = {id(m): (n, m) for n, m in reversed(modules)}
        ordered = sorted(unique.values(), key=lambda nm: -sum(1 for _ in nm[1].modules()))
        for var, root in ordered:
            if id(root) in self._names:
                continue
            self._roots.add(id(root))
            self._register_module(root, var, None)
            for p in root.parameters(recurse=False):
                self._param_layer.setdefault(id(p), var)
            for sub, module in root.named_modules():
                if sub and id(module) not in self._names:
                    top = sub.split(".", 1)[0]
                    prefix = self._child_name(var, top)[: -len(top)]
                    name = prefix + sub
                    parent = prefix + sub.rsplit(".", 1)[0] if "." in sub else var
                    self._register_module(module, name, parent)
                for p in module.parameters(recurse=False):
                    self._param_layer.setdefault(id(p), self._names[id(module)])

    def _storages_of(self, modules, optimizers, tensors) -> dict[int, _Storage]:
        found: dict[int, _Storage] = {}

        def add(t: Any, category: str, layer: str = "") -> None:
            try:
                if has_no_memory(t):  # meta, FakeTensor: nothing allocated (and a fake one warns when read)
                    return
                s = t.untyped_storage()
                ptr, nbytes = s.data_ptr(), s.nbytes()
                device = str(t.device)
            except Exception:
                return
            if not ptr or not nbytes or not device.startswith(("cpu", "cuda")):
                return
            old = found.get(ptr)
            if old is None:
                record = found[ptr] = _Storage(
                    ptr, nbytes, device, category, list(t.shape), str(t.dtype).replace("torch.", ""), layer
                )
                if device == "cpu":
                    # The CPU profiler never saw this block allocated, so it
                    # will not report its free: a finaliser on the storage does.
                    self._finalizers.append(weakref.finalize(s, self._baseline_freed, record))
            else:
                if _better(category, old.category):
                    old.category, old.shape, old.dtype = category, list(t.shape), str(t.dtype).replace("torch.", "")
                old.layer = old.layer or layer

        # Parameters, their gradients and optimizer state belong to the layer
        # that owns the parameter, also when they existed before the run.
        layers = self._param_layer
        for _, m in modules:
            for sub in m.modules():
                owner = self._names.get(id(sub), "")
                for p in sub.parameters(recurse=False):
                    add(p, "parameter", owner)
                    if p.grad is not None:
                        add(p.grad, "gradient", owner)
                for b in sub.buffers(recurse=False):
                    add(b, "parameter", owner)
        for opt in optimizers:
            state_bytes = 0
            for group in opt.param_groups:
                for p in group["params"]:
                    add(p, "parameter", layers.get(id(p), ""))
                    if p.grad is not None:
                        add(p.grad, "gradient", layers.get(id(p), ""))
            for p, state in opt.state.items():
                for v in state.values():
                    if isinstance(v, self._torch.Tensor):
                        add(v, "optimizer_state", layers.get(id(p), ""))
                        state_bytes += _nbytes(v)
            self._opt_state_start[id(opt)] = state_bytes
        for t in tensors:
            add(t, "other")
        return found

    @staticmethod
    def _baseline_freed(record: _Storage) -> None:
        record.freed_ns = time.time_ns()

    # -- Collector protocol ------------------------------------------------
    def start(self, origin: float | None = None) -> None:
        import torch

        global _not_eager
        if self._running:
            raise RuntimeError("TorchCollector already started")
        self._torch = torch
        _not_eager = torch_compat.not_eager(torch)
        self._undo_profiler_watch = None
        self._stderr_filter = None
        self._undo_warning_filter = None
        now_perf = time.perf_counter()
        self._wall0 = time.time_ns()
        self._perf_offset = now_perf - (now_perf if origin is None else origin)
        self._local = threading.local()
        # Private torch APIs go through torch_compat: a missing one is a note, not an error.
        compat_notes: list[RawNote] = []
        scopes = torch_compat.record_function_ops(torch)
        if scopes is None:
            scopes = torch_compat.record_function_class(torch)
            compat_notes.append(("torch_compat_record_function", f"torch {torch.__version__} has no "
                                 f"_record_function_enter_new: layer scopes use record_function (slower)"))
        self._scope_enter, self._scope_exit = scopes
        task_id = torch_compat.graph_task_id(torch)
        if task_id is None:
            compat_notes.append(("torch_compat_graph_task", f"torch {torch.__version__} has no "
                                 f"_current_graph_task_id: a forward recomputed by checkpointing counts as a call"))
        self._graph_task_id = task_id or (lambda: -1)
        self._names: dict[int, str] = {}
        self._roots: set[int] = set()
        self._modules: dict[str, weakref.ref] = {}
        self._types: dict[str, str] = {}
        self._parents: dict[str, str] = {}
        self._params_seen: set[int] = set()
        self._ran: set[str] = set()  # modules whose forward ran
        self._input_shapes: list[list[int]] = []  # of the tensors root modules were called with
        self._output_bytes: dict[int, int] = {}  # id(module) -> bytes its last call returned
        self._stepped: set[int] = set()  # id() of parameters an optimizer stepped
        self._optimizers: dict[int, weakref.ref] = {}
        self._steps: dict[int, int] = {}  # id(optimizer) -> steps taken in the run
        self._opt_names: dict[int, str] = {}  # id(optimizer) -> its path in the namespace
        self._opt_state_start: dict[int, int] = {}  # id(optimizer) -> state bytes at the start
        self._param_layer: dict[int, str] = {}  # id(parameter) -> the layer that owns it
        self._origin = now_perf if origin is None else origin
        self._thread = threading.get_ident()
        self._detailed = False
        self._detail_end = None
        self._heap_after_detail = None
        self._over_budget = False
        self._root_calls = 0
        self._clock = None
        #: Each step's end: {"t_end", "detailed", "peaks" (CUDA)} (RawCapture.steps).
        self._step_log: list[dict[str, Any]] = []
        self._rss = RssReader()
        self._figures = StepFigures(self._rss)
        self._ran_ids: set[int] = set()  # modules that ran after the detail ended
        self._observations: list[tuple] = []
        self._finalizers: list[weakref.finalize] = []
        self._notes = compat_notes
        modules, optimizers, tensors = self._namespace_objects()
        self._name_roots(modules)
        for opt in optimizers:
            self._optimizers[id(opt)] = weakref.ref(opt)
        self._baseline = self._storages_of(modules, optimizers, tensors)
        del modules, optimizers, tensors
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            if self.reset_peak:  # else the user's counters are left alone (and the run's peak is a bound)
                for i in range(torch.cuda.device_count()):
                    torch.cuda.reset_peak_memory_stats(i)
            if self.cuda_history:
                try:
                    torch_compat.cuda_history_start(torch)
                except Exception as exc:  # private API: the profile goes on without the stacks
                    self.cuda_history = False
                    compat_notes.append(("torch_compat_cuda_history", f"torch {torch.__version__}: CUDA's "
                                         f"allocation history could not be recorded ({exc!r}): no stacks of "
                                         f"live blocks at the peak"))
        import torch.optim.optimizer as optim

        self._handles = [
            optim.register_optimizer_step_pre_hook(self._optimizer_pre_hook),
            optim.register_optimizer_step_post_hook(self._optimizer_post_hook),
        ]
        self._module_handles: list = []
        self._hook_kind = "none"
        self._hook_swap = None
        self._idle_trees = self._trees_not_run()
        self._watch_stop = threading.Event()
        self._watcher = None
        self._safe_point: SafePoint = SafePoint(self._end_detail_at_safe_point)
        self._modules_built = 0
        self._build_handles = []
        self._profiler = None
        #: The detail's events as (logs, ops, last op) once read; the exception if they could not be.
        self._events: tuple | Exception | None = None
        self._cuda_before: dict[str, int] = {}  # bytes CUDA's allocator held before the detail (the walk)
        self._side: dict[str, Side] = {}
        self._detail_start: float | None = None
        if torch_compat.profiler_running(torch):
            self._users_profiler_running()
            self._set_module_hooks("ran")
        elif self.detail_steps.first == 1:
            try:
                self._start_detail()
            except Exception:
                self._remove_hooks()
                if self._cuda and self.cuda_history:
                    torch_compat.cuda_history_stop(torch)
                raise
        else:  # the window starts later: nothing records until its first step
            self._detailed = False
            self._set_module_hooks("ran")
        self._running = True

    def _start_detail(self) -> None:
        """Start torch's profiler (on the thread that runs the cell): every
        allocation and op from now until _end_detail is recorded."""
        self._profiler = torch_compat.memory_profiler(self._torch, self.record_shapes, self.with_stack)
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
            self._undo_profiler_watch = torch_compat.before_profiler_starts(self._user_profiler_starts)
            # The cell freeing its tensors from before makes torch print a line
            # each 1000th free (quiet.UNKNOWN_BLOCK): filtered while recording.
            self._stderr_filter = StderrFilter()
            self._stderr_filter.start()
            self._detailed = True
            self._set_module_hooks("detail")
            self._detail_start = time.perf_counter() - self._origin
            if self.budget_bytes:
                self._safe_point.install()
                self._watch_building()
                self._watcher = threading.Thread(target=self._watch_budget, args=(self.budget_bytes,),
                                                 name="memprofile-torch-budget", daemon=True)
                self._watcher.start()
        except BaseException:  # torch's profiler must not keep recording for the rest of the process
            self._stop_profiler_watch()
            self._detailed = False
            self._set_module_hooks("none")
            with quiet_stderr():
                torch_compat.stop_memory_profiler(self._profiler)
            self._profiler = None
            raise

    def _users_profiler_running(self) -> None:
        """A torch profiler of the user's records already: memprofile leaves
        it alone (starting its own would end the user's session) and records
        what it can without one."""
        self._detail_end = (time.perf_counter() - self._origin, "user_profiler")
        self._notes.append(("torch_user_profiler", "a torch profiler was already recording (torch.profiler.profile "
                            "or torch.autograd.profiler, started before): memprofile left it alone, as torch allows "
                            "one profiler at a time, so this profile has no op, layer or tensor-kind detail; host "
                            "memory, the training steps and what the namespace keeps are measured. Stop yours "
                            "before the cell for the detail"))

    def _set_module_hooks(self, kind: str) -> None:
        """The global module hooks for now: "detail" (scopes and observations),
        "ran" (only which trees worked) or "none". Never called from inside a
        module hook: torch iterates the hook dicts while it calls them."""
        import torch.nn.modules.module as hooks

        self._hook_swap = None
        if kind == "ran" and not self._idle_trees:
            kind = "none"
        if kind == self._hook_kind:
            return
        for handle in self._module_handles:
            handle.remove()
        if kind != "none" and self._undo_warning_filter is None:
            self._undo_warning_filter = torch_compat.hide_compile_hook_warning()
        elif kind == "none" and self._undo_warning_filter is not None:
            self._undo_warning_filter()
            self._undo_warning_filter = None
        if kind == "detail":
            self._module_handles = [
                hooks.register_module_forward_pre_hook(self._forward_pre_hook),
                hooks.register_module_forward_hook(self._forward_hook, always_call=True),
            ]
        elif kind == "ran":
            self._module_handles = [hooks.register_module_forward_pre_hook(self._ran_hook)]
        else:
            self._module_handles = []
        self._hook_kind = kind

    def _trees_not_run(self) -> set[str]:
        """The roots of the known module trees of which no module has run."""
        parents = self._parents
        ran = {root_of(n, parents) for n in self._ran}
        ran.update(root_of(self._names[k], parents) for k in self._ran_ids if k in self._names)
        return {n for n in self._modules if parents.get(n) is None and n not in ran}

    def _close_scopes(self) -> None:
        stack = self._stack()
        while stack:
            _, scope = stack.pop()
            try:
                self._scope_exit(scope)
            except Exception:
                pass

    def _remove_hooks(self) -> None:
        for handle in self._handles + self._module_handles:
            handle.remove()
        self._handles, self._module_handles = [], []
        self._hook_kind = "none"
        if self._undo_warning_filter is not None:
            self._undo_warning_filter()
            self._undo_warning_filter = None
        self._close_scopes()  # scopes a failed forward left open
        for f in self._finalizers:
            f.detach()
        self._finalizers = []

    def stop(self) -> RawCapture:
        if not self._running:
            raise RuntimeError("TorchCollector.stop() called before start()")
        torch = self._torch
        heap_at_end = heap_in_use()  # before stop's own work (reading events) moves it
        self._running = False
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join()
        self._safe_point.close()
        self._stop_watching_building()
        from memprofile.capture import lines

        lines.set_pending(None)
        self._stop_profiler_watch()
        try:
            if self._detailed:
                self._detailed = False
                with quiet_stderr():
                    torch_compat.stop_memory_profiler(self._profiler)
        finally:
            self._remove_hooks()
            self._rss.close()
        for key in self._ran_ids:  # modules that ran after the detail: they worked too
            name = self._names.get(key)
            if name:
                self._ran.add(name)
        self._scan_end()
        facts: dict[str, int | float | str] = {}
        if self._detail_end is not None:
            when, why = self._detail_end
            facts.update({"torch_detail_end_s": f"{when:.3f}", "torch_detail_why": why})
            if self._heap_after_detail is not None and heap_at_end is not None:
                facts.update({"cpu.heap_after_detail_bytes": self._heap_after_detail,
                              "cpu.heap_at_end_bytes": heap_at_end})
        capacities: dict[str, int] = {}
        if self._cuda and not self.reset_peak:
            self._notes.append(("cuda_peak_not_reset", "CUDA's peak counters were left alone (--no-reset-peak): "
                                "the profile's CUDA peak is the counters' since their last reset, which may be "
                                "before the cell, and the steps have no CUDA peaks of their own"))
        if self._cuda and self.reset_peak:
            self._notes.append(("cuda_peak_reset", "memprofile reset CUDA's peak counters when the cell started "
                                "and at each training step to measure each step's peak: after the cell, "
                                "torch.cuda.max_memory_allocated() reads the last step's peak, not the cell's (this "
                                "profile has the cell's). --no-reset-peak (memprofile.profile(reset_os_peak=False)) "
                                "leaves them, and the OS's peak-RSS mark, alone, without per-step CUDA peaks",
                                "%%memprofile --no-reset-peak"))
        if self._cuda:
            for i in range(torch.cuda.device_count()):
                capacity = torch.cuda.get_device_properties(i).total_memory
                capacities[f"cuda:{i}"] = capacity
                for k, v in cuda_facts(torch.cuda.memory_stats(i), capacity).items():
                    facts[f"cuda:{i}.{k}"] = v
                # The counters' peak was reset each step: the run's is the highest step's.
                stepped = [s["peaks"].get(f"cuda:{i}", 0) for s in self._step_log if "peaks" in s]
                if stepped:
                    facts[f"cuda:{i}.allocated_peak_bytes"] = max(stepped + [facts[f"cuda:{i}.allocated_peak_bytes"]])
                if self._detail_end is not None:  # the events ended with the detail; the counter with the cell
                    facts[f"cuda:{i}.counted_end_bytes"] = int(torch.cuda.memory_allocated(i))
            if self.cuda_history:
                try:
                    for j, block in enumerate(live_blocks_from_snapshot(torch_compat.cuda_snapshot(torch))):
                        where = " < ".join(block["stack"])
                        facts[f"cuda_live_block.{j}"] = f"{block['device']} {block['bytes']} B at {where}"
                except Exception as exc:  # private API: the rest of the profile stands
                    self._notes.append(("torch_compat_cuda_history", f"torch {torch.__version__}: CUDA's "
                                        f"allocation history could not be read ({exc!r})"))
                finally:
                    torch_compat.cuda_history_stop(torch)
        if self._detail_start is not None:
            facts["torch_detail_start_s"] = f"{self._detail_start:.3f}"
        users = self._detail_end is not None and self._detail_end[1] == "user_profiler"
        if self._profiler is None and self._events is None and not users:  # the window's first step never came
            self._notes.append(("torch_detail_never", f"the cell ran {len(self._step_log)} training steps: "
                                f"none in the detail window (steps {self.detail_steps.text()}), so no op, layer "
                                f"or kind detail was recorded"))
        if self._profiler is None and self._events is None:
            self._events = ({}, {}, {})
        self._read_events()
        if isinstance(self._events, Exception):  # private API: say so, keep the rest of the profile
            return RawCapture(
                collector=self.name,
                frameworks={"torch": torch.__version__},
                notes=[("torch_events_unreadable", f"torch's profiler events could not be read "
                        f"({self._events!r}); only process memory is shown")],
            )
        assert self._events is not None  # read just now, or set above where the detail never started
        logs, ops, last_op = self._events
        compiled = next((name for name in ops if name.startswith(_COMPILED_EVENTS)), None)
        if compiled is not None:
            self._compiled_ran(f"code compiled by torch.compile ({compiled})")
        for device, capacity in capacities.items():
            if device in logs:
                logs[device].capacity_bytes = capacity
        self._categorise(logs)
        self._name_new_roots(logs, last_op)
        return RawCapture(
            collector=self.name,
            allocations=list(logs.values()),
            ops=list(ops.values()),
            modules=self._module_records(),
            optimizers=self._optimizer_records(),
            frameworks={"torch": torch.__version__},
            notes=self._notes,
            options={
                "torch_record_shapes": str(self.record_shapes).lower(),
                "torch_with_stack": str(self.with_stack).lower(),
            },
            facts=facts,
            last_op=last_op,
            input_shapes=self._input_shapes,
            steps=self._step_log,
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
            roots = torch_compat.event_tree(self._profiler)
        except Exception as exc:
            self._events = exc
            self._drop_events()
            return
        # The walk makes a Python object per event and keeps them all: the
        # cyclic GC, triggered by those allocations, would traverse them again
        # and again (~15 % of the walk). Nothing it makes is cyclic.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._events = self._walk(roots)
            del roots
        finally:
            if collecting:
                gc.enable()
            self._drop_events()

    def _scan_end(self) -> None:
        """Observe what the modules and optimizers hold at the end."""
        for name, ref in list(self._modules.items()):
            module = ref()
            if module is None:
                continue
            for p in module.parameters(recurse=False):
                self._param_layer.setdefault(id(p), name)
                self._observe(p, "parameter", name)
                if p.grad is not None:
                    self._observe(p.grad, "gradient", name)
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
            torch_compat.drop_events(prof)

    def _name_new_roots(self, logs: dict[str, AllocationLog], last_op: dict[str, str]) -> None:
        """A model built during the run was named by its type when it first
        ran (`Sequential`); the namespace now names it (`net`): rename its
        tree everywhere, so layers and the code rules offer use the variable."""
        by_id = {key: self._names[key] for key in self._roots if key in self._names}
        typed = {key: name for key, name in by_id.items()
                 if (ref := self._modules.get(name)) is not None and (m := ref()) is not None
                 and id(m) == key and name == type(m).__name__}
        if not typed:
            return
        found: dict[str, str] = {}

        def take(variable: str, path: str, value: Any, via: str) -> bool:
            if id(value) in typed and via == "variable" and path.isidentifier():
                found.setdefault(typed[id(value)], path)
            return isinstance(value, self._torch.nn.Module | self._torch.Tensor)

        walk_namespace(self.namespace, take)

        def free(name: str) -> bool:  # no module goes by it, or one the variable no longer holds
            ref = self._modules.get(name)
            module = ref() if ref is not None else None
            return module is None or self.namespace.get(name) is not module

        renames = {old: new for old, new in found.items() if free(new)}
        if not renames:
            return

        def rename(name: str) -> str:
            head, dot, rest = name.partition(".")
            new = renames.get(head)
            return (new + dot + rest) if new is not None else name

        for log in logs.values():
            log.layer = [rename(n) if n else n for n in log.layer]
        self._modules = {rename(k): v for k, v in self._modules.items()}
        self._types = {rename(k): v for k, v in self._types.items()}
        self._parents = {rename(k): rename(v) for k, v in self._parents.items()}
        self._ran = {rename(n) for n in self._ran}
        self._param_layer = {k: rename(v) for k, v in self._param_layer.items()}
        self._names = {k: rename(v) for k, v in self._names.items()}
        if last_op.get("layer"):
            last_op["layer"] = rename(last_op["layer"])

    def _optimizer_records(self) -> list[dict]:
        """Every optimizer the namespace held or the run stepped (OptimizerStat's fields)."""
        records = []
        unnamed = {k for k in self._optimizers if k not in self._opt_names}
        if unnamed:  # made during the run: the namespace names them now

            def take(variable: str, path: str, value: Any, via: str) -> bool:
                if id(value) in unnamed and via == "variable":
                    self._opt_names.setdefault(id(value), path)
                return isinstance(value, self._torch.optim.Optimizer | self._torch.Tensor | self._torch.nn.Module)

            walk_namespace(self.namespace, take)
        for key, ref in self._optimizers.items():
            opt = ref()
            if opt is None:
                continue
            params = {id(p): p for g in opt.param_groups for p in g["params"]}
            state = sum(_nbytes(v) for st in opt.state.values() for v in st.values()
                        if isinstance(v, self._torch.Tensor))
            models = sorted({self._param_layer[i] for i in params if i in self._param_layer})
            records.append({
                "name": self._opt_names.get(key) or type(opt).__name__,
                "type": type(opt).__name__,
                "stepped": self._steps.get(key, 0) > 0,
                "steps": self._steps.get(key, 0),
                "parameter_bytes": sum(_nbytes(p) for p in params.values()),
                "state_bytes": state,
                "state_created": state > self._opt_state_start.get(key, 0),
                "models": models,
            })
        return records

    # -- the event tree ----------------------------------------------------
    def _add(self, logs: dict[str, AllocationLog], device: str, ptr: int, grad: bool, *args, **kwargs) -> int:
        return add_row(logs, self._side, device, ptr, grad, *args, **kwargs)

    def _walk(self, roots: list) -> tuple[dict[str, AllocationLog], dict[str, OpRecord], dict]:
        """One pass over the event tree. Hot: it visits every op of the run
        (~3.3 µs a node, ~2.5 of them in torch's own accessors, each a C++
        call), so it reads as few node properties as it can, walks children
        by iterator instead of pushing a (node, context) pair for each, and
        keeps a memory event as one tuple: the columns are built once at the
        end."""
        TORCHOP = torch_compat.event_type_torch_op()
        # only the Python tracer adds nodes that are neither
        check_tag = self.with_stack and TORCHOP is not None
        ledger = MemoryLedger()
        alloc, free = ledger.alloc, ledger.free
        ops: dict[str, OpRecord] = {}
        seq_layer: dict[int, str] = {}
        last: tuple[str, str] | None = None  # the last op in time order (DFS order, per thread)
        oom: tuple[str, str] | None = None
        record_shapes = self.record_shapes
        wall0, offset = self._wall0, self._perf_offset
        device_names: dict[Any, str] = {}
        accelerator = getattr(self._torch, "accelerator", None)
        only_cpu = not self._torch.cuda.is_available() and not (accelerator and accelerator.is_available())

        # Context: (layer, phase, grad enabled, chain of op names outermost
        # first, the chain's distinct OpRecords)
        frames: list[tuple[Any, tuple]] = [
            (iter(sorted(roots, key=lambda e: e.start_time_ns)), ("", "other", True, (), ()))
        ]
        while frames:
            nodes, ctx = frames[-1]
            for node in nodes:
                name = node.name
                if name == "[memory]":
                    f = node.extra_fields
                    size = f.alloc_size
                    if only_cpu:  # no accelerator: every block is the CPU's (and reading it is a C++ call)
                        device = "cpu"
                    else:
                        try:
                            device = device_names[f.device]
                        except KeyError:
                            device = device_names[f.device] = str(f.device)
                    t = (node.start_time_ns - wall0) / 1e9 + offset  # self._t, inlined
                    chain = ctx[3]
                    if size > 0:
                        alloc(device, size, f.allocation_id, t, ctx[0], chain[0] if chain else "", ctx[1], ctx[2],
                              f.ptr, f.total_allocated if device.startswith("cuda") else -1)
                        if chain:
                            charge_alloc(ops, chain, ctx[4], device, size)
                    elif size < 0:
                        free(device, size, f.allocation_id, t, ctx[1] == "backward", f.ptr,
                             f.total_allocated if device.startswith("cuda") else -1)
                        if chain:
                            ops[chain[0]].freed_bytes -= size
                    continue
                if name == "[OutOfMemory]":  # the allocator refused a block, here
                    oom = (ctx[3][0] if ctx[3] else "", ctx[0])
                    continue
                children = node.children
                if check_tag and node.tag != TORCHOP:
                    if children:
                        frames.append((iter(children), ctx))
                        break
                    continue
                layer, phase, grad, chain, recs = ctx
                child_ctx = ctx
                if name.startswith("memprofile.layer"):
                    if name.startswith(LAYER_PREFIX):
                        layer, grad = name[len(LAYER_PREFIX):], True
                    else:
                        layer, grad = name[len(NOGRAD_LAYER_PREFIX):], False
                    child_ctx = (layer, "backward" if phase == "backward" else "forward", grad, chain, recs)
                elif name.startswith(BACKWARD_PREFIX):
                    op = name[len(BACKWARD_PREFIX):]
                    rec = ops.get(op)
                    if rec is None:
                        rec = ops[op] = OpRecord(op, "cpu")
                    rec.calls += 1
                    child_ctx = (seq_layer.get(node.extra_fields.sequence_number, ""), "backward", False, (op,), (rec,))
                elif name.startswith(OPTIMIZER_PREFIXES):
                    child_ctx = ("", "optimizer", False, (), ())
                elif chain and chain[-1] == name:
                    # The autograd node inside its evaluate_function: counted
                    # there; its inputs are the shapes worth showing.
                    if record_shapes:
                        _sample_shapes(ops[name], node)
                else:
                    rec = ops.get(name)
                    if rec is None:
                        rec = ops[name] = OpRecord(name, "cpu")
                    rec.calls += 1
                    if layer and phase == "forward":
                        seq = node.extra_fields.sequence_number
                        if seq >= 0:
                            seq_layer[seq] = layer
                    if record_shapes:
                        _sample_shapes(rec, node)
                        if name in DDP_BUCKET_SCOPES:  # its input is a view of the bucket it writes to
                            for value in node.extra_fields.inputs:
                                ledger.bucket(getattr(value, "allocation_id", None))
                        elif not chain and phase != "backward" and name not in _VIEW_OPS:
                            # An outermost forward op's inputs name the shape and
                            # dtype of blocks allocated earlier (memory events carry
                            # none). Backward and view ops are skipped: reading
                            # inputs is a C++ call per op, and they only see
                            # tensors the forward ops saw already.
                            for value in node.extra_fields.inputs:
                                key = getattr(value, "allocation_id", None)
                                if key in ledger.where:
                                    ledger.shape(key, list(value.sizes), str(value.dtype).replace("torch.", ""))
                    last = (name, layer)
                    if children:
                        child_ctx = (layer, phase, grad, chain + (name,), recs if name in chain else recs + (rec,))
                if children:
                    frames.append((iter(children), child_ctx))
                    break
            else:
                frames.pop()
        self._cuda_before = ledger.cuda_before
        logs, self._side = ledger.logs()
        failed = oom or last
        return logs, ops, ({"op": failed[0], "layer": failed[1]} if failed else {})

    # -- categories ----------------------------------------------------------
    def _categorise(self, logs: dict[str, AllocationLog]) -> None:
        known: dict[str, int] = {}  # bytes of CUDA blocks from before that the namespace names
        # 1. pre-existing storages known from the namespace
        for record in self._baseline.values():
            if record.device.startswith("cuda"):
                known[record.device] = known.get(record.device, 0) + record.nbytes
            i = self._add(logs, record.device, record.ptr, False, record.nbytes, 0.0, -1,
                          category=record.category, shape=record.shape, dtype=record.dtype,
                          pre_existing=True, op=BEFORE_CELL, layer=record.layer)
            if record.freed_ns is not None:
                log = logs[record.device]
                log.t_free[i] = self._t(record.freed_ns)
                log.seq_free[i] = -1  # known by time only
        add_cuda_baseline(logs, self._side, self._cuda_before, known)  # the rest the allocator held
        # 2. what the hooks and the end-of-run scan saw, matched by storage and time
        index: dict[tuple[str, int], tuple[list[float], list[int]]] = {}
        for device, log in logs.items():
            by_ptr: dict[int, list[int]] = {}
            for i, ptr in enumerate(self._side[device].ptr):
                if ptr:
                    by_ptr.setdefault(ptr, []).append(i)
            for ptr, rows in by_ptr.items():
                starts = [-1e300 if log.pre_existing[r] else log.t_alloc[r] for r in rows]
                order = sorted(range(len(rows)), key=starts.__getitem__)
                index[(device, ptr)] = ([starts[k] for k in order], [rows[k] for k in order])
        observed: dict[tuple[str, int], tuple[str, list[int], str, str]] = {}  # -> (category, shape, dtype, layer)
        detail_end = self._detail_end[0] if self._detail_end else ALIVE
        unmatched: dict[tuple[str, int], tuple] = {}
        for ptr, t_ns, category, shape, dtype, device, nbytes, layer in self._observations:
            t = self._t(t_ns)
            row = None
            entry = index.get((device, ptr))
            if entry is not None:
                starts, rows = entry
                k = bisect.bisect_right(starts, t) - 1
                if k >= 0 and logs[device].t_free[rows[k]] > t:
                    row = rows[k]
            if row is None:
                if t > detail_end:
                    continue  # made after the detail ended: no event saw it, and it is not from before the run
                old = unmatched.get((device, ptr))
                if old is None or _better(category, old[0]):
                    unmatched[(device, ptr)] = (category, shape, dtype, nbytes, layer or (old[4] if old else ""))
                continue
            old = observed.get((device, row))
            if old is None or _better(category, old[0]):
                observed[(device, row)] = (category, shape, dtype, layer or (old[3] if old else ""))
        # Storages the hooks saw that existed before the run but were not in
        # the namespace (a model held only by a function, say). CUDA blocks
        # like these are already in the allocator's baseline.
        for (device, ptr), (category, shape, dtype, nbytes, layer) in unmatched.items():
            if device.startswith("cpu"):
                self._add(logs, device, ptr, False, nbytes, 0.0, -1, category=category, shape=shape,
                          dtype=dtype, pre_existing=True, op=BEFORE_CELL, layer=layer)
        # 3. the rest, from when they were allocated and freed
        categorise_by_time(logs, self._side, observed)

    def _module_records(self) -> list[ModuleRecord]:
        records = []
        states: dict[int, int] = {}
        for ref in self._optimizers.values():
            opt = ref()
            if opt is None:
                continue
            for p, state in opt.state.items():
                states[id(p)] = states.get(id(p), 0) + sum(
                    v.untyped_storage().nbytes() for v in state.values() if isinstance(v, self._torch.Tensor)
                )
        for name, ref in self._modules.items():
            module = ref()
            record = ModuleRecord(name=name, type=self._types.get(name, "?"), parent=self._parents.get(name),
                                  ran=name in self._ran,
                                  output_bytes=self._output_bytes.get(id(module), 0) if module is not None else 0)
            if module is not None:
                seen: set[int] = set()
                for p in module.parameters(recurse=False):
                    ptr = p.untyped_storage().data_ptr()
                    if ptr in seen:
                        continue
                    seen.add(ptr)
                    record.parameter_bytes += p.untyped_storage().nbytes()
                    record.ran |= id(p) in self._stepped
                    if p.grad is not None:
                        record.gradient_bytes += _own_bytes(p.grad)
                        # a gradient that did not exist at the start: backward reached it
                        record.ran |= p.grad.untyped_storage().data_ptr() not in self._baseline
                    record.optimizer_state_bytes += states.get(id(p), 0)
            records.append(record)
        return records


#: Ops that make views or read metadata: their inputs were some other op's first.
_VIEW_OPS = frozenset({
    "aten::view", "aten::t", "aten::transpose", "aten::as_strided", "aten::expand", "aten::reshape",
    "aten::detach", "aten::resolve_conj", "aten::resolve_neg", "aten::permute", "aten::unsqueeze",
    "aten::squeeze", "aten::select", "aten::slice", "aten::_unsafe_view", "aten::contiguous", "aten::alias",
    "aten::size", "aten::stride", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "detach",
    "aten::split", "aten::chunk", "aten::unbind", "aten::narrow", "aten::flatten", "aten::zero_", "aten::fill_",
})


def _sample_shapes(rec: OpRecord, node: Any) -> None:
    """Keep a few distinct input shapes of an op, looked for in its first calls."""
    if rec.calls <= _SHAPE_SAMPLE_CALLS and len(rec.input_shapes) < _MAX_SHAPES_PER_OP:
        shapes = _input_shapes(node.extra_fields)
        if shapes and shapes not in rec.input_shapes:
            rec.input_shapes.append(shapes)


def _input_shapes(fields: Any) -> str:
    parts = []
    for value in fields.inputs:
        sizes = getattr(value, "sizes", None)
        if sizes is not None:
            parts.append("[" + ", ".join(str(s) for s in sizes) + "]")
    return ", ".join(parts)
