"""Every private torch API the capture touches, in one place, each with the
torch versions it was checked on (scripts/compat.sh runs the capture tests on
each; README "Tested versions"). A missing or changed one gives the
collector a fallback and a named note for the profile, never an exception in
the user's cell.

The event tree's node fields are read in the walk itself (capture/torch/walk.py
`walk`), where a failure is already caught and said
(`torch_events_unreadable`). CUDA's allocation history (cuda_history_*) is
written against the documented API and never run on a GPU here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

#: The torch releases the entries below were checked on (scripts/compat.sh).
CHECKED_ON = "2.4.1, 2.6.0, 2.13.0, 2.15.0"


def record_function_ops(torch: Any) -> tuple[Callable, Callable] | None:
    """(enter, exit) of the ops behind `torch.autograd.profiler.record_function`,
    called directly: the class adds CUDA and torch-function checks per call
    (~2 µs a module call). `torch.ops.profiler._record_function_enter_new` and
    `_record_function_exit._RecordFunction`: torch 1.13 and later; checked on
    CHECKED_ON. None when they are gone (the caller uses the class)."""
    try:
        ops = torch.ops.profiler
        return ops._record_function_enter_new, ops._record_function_exit._RecordFunction
    except (AttributeError, RuntimeError):
        return None


def record_function_class(torch: Any) -> tuple[Callable, Callable]:
    """The public fallback for record_function_ops: (enter, exit) over the
    `record_function` context manager."""

    def enter(name: str, args: Any = None) -> Any:
        scope = torch.autograd.profiler.record_function(name)
        scope.__enter__()
        return scope

    def leave(scope: Any) -> None:
        scope.__exit__(None, None, None)

    return enter, leave


def graph_task_id(torch: Any) -> Callable[[], int] | None:
    """`torch._C._current_graph_task_id()`: -1 outside backward, so a forward
    that backward runs again (checkpointing's recomputation) is not taken for
    a call of the model. torch 2.0 and later; checked on CHECKED_ON. None when
    gone (every forward then counts as a call)."""
    fn = getattr(getattr(torch, "_C", None), "_current_graph_task_id", None)
    return fn if callable(fn) else None


def event_type_torch_op() -> Any:
    """`torch._C._profiler._EventType.TorchOp`: which nodes of the event tree
    are ops (with_stack adds Python frames). torch 2.0 and later; checked on
    CHECKED_ON. None when gone (every node is taken for an op)."""
    try:
        from torch._C._profiler import _EventType

        return _EventType.TorchOp
    except (ImportError, AttributeError):
        return None


def memory_profiler(torch: Any, record_shapes: bool, with_stack: bool) -> Any:
    """A kineto profiler recording every allocation: torch.autograd.profiler's
    `profile(use_kineto=True, profile_memory=True)`, under the public
    `torch.profiler.profile`. Not the public one: its start reads
    `torch._inductor`'s config, which imports dynamo and triton: slow, and
    with torch 2.15 (CUDA build) and TensorFlow 2.21 in one process loading
    triton after TensorFlow aborts the interpreter (seen in scripts/compat.sh;
    torch's own optimizers import dynamo too). Checked on CHECKED_ON."""
    cuda = torch.cuda.is_available()
    return torch.autograd.profiler.profile(
        use_kineto=True,
        use_cpu=True,
        use_device="cuda" if cuda else None,
        profile_memory=True,
        record_shapes=record_shapes,
        with_stack=with_stack,
    )


def event_tree(profiler: Any) -> list:
    """The roots of a stopped profiler's event tree (memory_profiler's, or a
    public `torch.profiler.profile`, which wraps one):
    `kineto_results.experimental_event_tree()`. torch 1.13 and later; checked
    on CHECKED_ON. Raises what torch raises (the caller says the events could
    not be read and keeps the rest of the profile)."""
    return getattr(profiler, "profiler", profiler).kineto_results.experimental_event_tree()


def stop_memory_profiler(profiler: Any) -> None:
    """Stop memory_profiler's profiler, keeping its kineto results for
    event_tree. torch 2.4's `profile.__exit__` also turns every event into a
    Python FunctionEvent (the whole list, eagerly: seconds and hundreds of MB
    for a loop of small ops, never read here); torch 2.5 and later do that
    lazily (`_ensure_function_events`). On a torch that parses eagerly, the
    stop is `__exit__` without the parse: torch.autograd.profiler's
    `_disable_profiler()` and `_run_on_profiler_stop()`, and an empty
    `function_events` (the stopped profile's kineto results still save as a
    Chrome trace). Checked on CHECKED_ON."""
    cls = type(profiler)
    module = sys.modules.get(cls.__module__)
    disable = getattr(module, "_disable_profiler", None)
    on_stop = getattr(module, "_run_on_profiler_stop", None)
    if hasattr(cls, "_ensure_function_events") or not callable(disable) or not callable(on_stop):
        profiler.__exit__(None, None, None)
        return
    if not getattr(profiler, "enabled", True):
        return
    device = getattr(profiler, "use_device", None)
    sync = getattr(getattr(sys.modules.get("torch"), device or "", None), "synchronize", None)
    if callable(sync):
        sync()
    profiler.kineto_results = disable()
    on_stop()
    events = getattr(module, "EventList", None)
    if events is not None:  # "finished" for its other methods; memprofile reads the event tree
        profiler.function_events = events([])


def drop_events(profiler: Any) -> None:
    """Let a stopped profiler's events go now (event_tree was read): its
    `kineto_results` and the FunctionEvents made from them (`_function_events`
    from torch 2.5; torch 2.4 keeps them in a plain `function_events`).
    Dropped as they are they can live until the cyclic GC runs (a public
    torch.profiler.profile and its inner profiler refer to each other), and
    a stopped profiler whose events are still referenced made the process
    grow ~360 bytes per allocation for the rest of the cell. Checked on
    CHECKED_ON; a torch that shapes these objects otherwise: the GC frees
    them later."""
    for holder in (getattr(profiler, "profiler", None), profiler):
        if holder is None or not hasattr(holder, "kineto_results"):
            continue
        try:
            holder.kineto_results = None
            holder._function_events = None
            if "function_events" in vars(holder):  # torch 2.4: an attribute, not a property
                holder.function_events = None
        except Exception:
            pass


def saved_tensors(fn: Any, max_nodes: int) -> Iterator[Any]:
    """Every tensor the autograd graph behind node `fn` saves for backward
    (up to `max_nodes` nodes): the nodes' `_saved_*` attributes (torch 1.x
    and later), one freed by backward raises and is skipped. The nodes seen
    are kept referenced until the walk ends: torch 2.4 and 2.6 make a new
    Python object for a node each time `next_functions` is read and free it
    once unreferenced, so `id()` of a node let go is reused by the next and a
    walk keyed by id alone stopped after one node per time step (64 KiB of a
    GRU's 130 MiB). Checked on CHECKED_ON."""
    seen: dict[int, Any] = {}  # id -> node, held so that ids stay unique
    stack = [fn]
    while stack and len(seen) < max_nodes:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except Exception:  # RuntimeError: freed by backward
                continue
            yield from value if isinstance(value, tuple | list) else (value,)
        stack.extend(next_fn for next_fn, _ in getattr(node, "next_functions", ()))


def cuda_history_start(torch: Any) -> None:
    """`torch.cuda.memory._record_memory_history(max_entries=...)` (torch 2.1
    and later; documented in "Understanding CUDA Memory Usage", never run on
    a GPU here). Raises what torch raises."""
    torch.cuda.memory._record_memory_history(max_entries=100_000)


def cuda_history_stop(torch: Any) -> None:
    """`torch.cuda.memory._record_memory_history(enabled=None)`: stop recording."""
    torch.cuda.memory._record_memory_history(enabled=None)


def cuda_snapshot(torch: Any) -> dict:
    """`torch.cuda.memory._snapshot()`: the live segments and blocks with the
    stacks that made them (torch_cuda.live_blocks_from_snapshot reads it)."""
    return torch.cuda.memory._snapshot()


_NOT_EAGER: dict[int, Callable[[], bool]] = {}


def not_eager(torch: Any) -> Callable[[], bool]:
    """A check that is true while a compiler or tracer runs the Python code:
    `torch.compiler.is_compiling()` (dynamo: torch.compile, torch.export; a
    constant True inside dynamo's trace, so a hook that returns on it adds
    nothing to the graph, and dynamo never looks at the rest of the hook),
    then `torch._C._get_tracing_state()` (torch.jit.trace; only read outside
    dynamo, which does not trace it). One function per torch, kept: dynamo
    guards on the identity of what a hook calls, and a new one each cell
    would recompile a compiled model at every profiled cell. torch 2.0 and
    later; checked on CHECKED_ON. Either one missing: that check is left out."""
    check = _NOT_EAGER.get(id(torch))
    if check is not None:
        return check
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    tracing_state = getattr(getattr(torch, "_C", None), "_get_tracing_state", None)

    def compiling_or_tracing() -> bool:
        if is_compiling is not None and is_compiling():
            return True
        return tracing_state is not None and tracing_state() is not None

    _NOT_EAGER[id(torch)] = compiling_or_tracing
    return compiling_or_tracing


def profiler_running(torch: Any) -> bool:
    """Whether a torch profiler records now (the user's `torch.profiler.profile`,
    `torch.autograd.profiler.profile`, the legacy one, kineto's on-demand):
    `torch.autograd._profiler_enabled()` (torch 1.x and later; checked on
    CHECKED_ON). Missing: False (memprofile's start would then replace it)."""
    enabled = getattr(getattr(torch, "autograd", None), "_profiler_enabled", None)
    try:
        return bool(enabled()) if callable(enabled) else False
    except Exception:
        return False


#: The functions of torch.autograd.profiler that start a kineto session; every
#: torch profiler front end (torch.profiler.profile, torch.autograd.profiler.profile)
#: calls them through that module's globals.
_PROFILER_STARTS = ("_prepare_profiler", "_enable_profiler")


def before_profiler_starts(before: Callable[[], None]) -> Callable[[], None]:
    """Call `before()` ahead of any other torch profiler's start (torch allows
    one session: a second start replaces the first's silently), by wrapping
    `torch.autograd.profiler._prepare_profiler` and `_enable_profiler`
    (module globals that `profile._prepare_trace` and `_start_trace` call;
    torch 2.0 and later; checked on CHECKED_ON). Returns the undo, which puts
    torch's own functions back. A torch without them: nothing is wrapped
    (a profiler started inside the cell then takes over memprofile's)."""
    module = sys.modules.get("torch.autograd.profiler")
    originals: dict[str, Any] = {name: getattr(module, name, None) for name in _PROFILER_STARTS}
    wrapped: dict[str, Callable] = {}
    for name, found in originals.items():
        if not callable(found):
            continue

        def start(*args: Any, __original: Callable = found, **kwargs: Any) -> Any:
            before()
            return __original(*args, **kwargs)

        setattr(module, name, start)
        wrapped[name] = start

    def undo() -> None:
        for name, start in wrapped.items():
            if getattr(module, name, None) is start:  # not replaced again since
                setattr(module, name, originals[name])

    return undo


#: torch's warning at each call of a `torch.compile(module)` while any global
#: module hook is registered (torch/_dynamo/eval_frame.py, OptimizedModule.__call__;
#: torch 2.6 and later; checked on CHECKED_ON): memprofile's hooks are the
#: ones registered, and they do nothing under dynamo.
COMPILE_HOOK_WARNING = r"Using `torch\.compile\(module\)` when there are global hooks on modules"


def hide_compile_hook_warning() -> Callable[[], None]:
    """Keep COMPILE_HOOK_WARNING out of the cell (the bare cell has no global
    hooks, and no warning) by a warnings filter for that message only; returns
    the undo, which takes the filter out again (left alone where the cell
    replaced the filters since)."""
    import warnings

    warnings.filterwarnings("ignore", message=COMPILE_HOOK_WARNING, category=UserWarning)
    entry = warnings.filters[0]

    def undo() -> None:
        try:
            cast(list, warnings.filters).remove(entry)
        except ValueError:  # the cell reset or replaced the filters: ours went with them
            return
        mutated = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held", None)
        if callable(mutated):  # the "once"/"default" registries start again, as after any filter change
            mutated()

    return undo
