"""Every private torch API the capture touches, in one place, each with the
torch versions it was checked on (scripts/compat.sh runs the capture tests on
each; README "Tested versions"). A missing or changed one gives the
collector a fallback and a named note for the profile, never an exception in
the user's cell.

The event tree's node fields are read in the walk itself (capture/torch.py
`_walk`), where a failure is already caught and said
(`torch_events_unreadable`). CUDA's allocation history
(`torch.cuda.memory._record_memory_history`, `_snapshot`, for --cuda-history)
is still called there directly: written against the documented API and never
run on a GPU here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        use_kineto=True, use_cpu=True, use_device="cuda" if cuda else None,
        profile_memory=True, record_shapes=record_shapes, with_stack=with_stack,
    )


def event_tree(profiler: Any) -> list:
    """The roots of a stopped profiler's event tree (memory_profiler's, or a
    public `torch.profiler.profile`, which wraps one):
    `kineto_results.experimental_event_tree()`. torch 1.13 and later; checked
    on CHECKED_ON. Raises what torch raises (the caller says the events could
    not be read and keeps the rest of the profile)."""
    return getattr(profiler, "profiler", profiler).kineto_results.experimental_event_tree()
