"""The global module hooks. While the detail records, each module call opens a
`record_function` scope (LAYER_PREFIX + its qualified name), so every
allocation's ancestors in the event tree name its layer, and the call's
parameters and inputs are observed; outside the detail, one cheap hook says
which model trees worked, until every known tree has."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from memprofile.capture.torch import compat
from memprofile.capture.torch.categories import Observer
from memprofile.capture.torch.layers import LayerTree
from memprofile.capture.torch.walk import LAYER_PREFIX, NOGRAD_LAYER_PREFIX


def _never() -> bool:
    return False


#: True while torch.compile/torch.export (dynamo) or torch.jit.trace runs the
#: Python code (compat.not_eager, set by watch_eagerness): the module hooks then
#: do nothing, so no profiler call ends up in a compiled or traced graph, and
#: dynamo never traces the collector's state. A module global, not an
#: attribute: dynamo reads it without tracking the collector object.
_not_eager = _never
#: Modules that run as one compiled or scripted graph: their layers are not
#: separated (no module hook runs inside them).
_COMPILED_MODULES = ("OptimizedModule", "RecursiveScriptModule", "TopLevelTracedModule", "ScriptModule")


def watch_eagerness(torch: Any) -> None:
    """The hooks do nothing from now on while torch compiles or traces."""
    global _not_eager
    _not_eager = compat.not_eager(torch)


def _tensor_bytes(value: Any, Tensor: Any) -> int:
    if isinstance(value, Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, tuple | list):
        return sum(v.nelement() * v.element_size() for v in value if isinstance(v, Tensor))
    if isinstance(value, dict):
        return sum(v.nelement() * v.element_size() for v in value.values() if isinstance(v, Tensor))
    return 0


class ModuleHooks:
    """The module hooks of one run and what they saw. The run says whether the
    detail records (`detailed`), whether it is over its budget (`over_budget`),
    ends the detail (`end_detail(why, in_module_hook=True)`) and notes a compiled
    model (`compiled_ran(where)`); `scopes` are the (enter, exit) of a profiler
    scope, `graph_task_id` autograd's current graph task (-1 outside backward)."""

    def __init__(
        self,
        torch: Any,
        layers: LayerTree,
        observer: Observer,
        param_layer: dict[int, str],
        scopes: tuple[Callable, Callable],
        graph_task_id: Callable[[], int],
        *,
        detailed: Callable[[], bool],
        over_budget: Callable[[], bool],
        end_detail: Callable[..., None],
        compiled_ran: Callable[[str], None],
        root_called: Callable[[], None] | None = None,
    ) -> None:
        self.ran: set[str] = set()  # modules whose forward ran
        self.ran_ids: set[int] = set()  # modules that ran after the detail ended
        self.input_shapes: list[list[int]] = []  # of the tensors root modules were called with
        self.output_bytes: dict[int, int] = {}  # id(module) -> bytes its last call returned
        self.root_calls = 0  # calls of a root module (a model) while the detail records
        self.kind = "none"  # the hooks registered: "detail", "ran" or "none"
        self.swap: str | None = None  # the hooks to change to at the next step's end
        self.idle_trees: set[str] = set()
        self._torch = torch
        self._layers = layers
        self._observer = observer
        self._param_layer = param_layer
        self._scope_enter, self._scope_exit = scopes
        self._graph_task_id = graph_task_id
        self._detailed = detailed
        self._over_budget = over_budget
        self._end_detail = end_detail
        self._compiled_ran = compiled_ran
        self._on_root_call = root_called  # a model was called (the collector looks for a trainer)
        self._params_seen: set[int] = set()
        self._local = threading.local()
        self._handles: list[Any] = []
        self._undo_warning_filter: Callable[[], None] | None = None  # while global module hooks are registered
        self.idle_trees = self.trees_not_run()

    def trees_not_run(self) -> set[str]:
        """The roots of the known module trees of which no module has run."""
        return self._layers.trees_not_run(self.ran, self.ran_ids)

    def set(self, kind: str) -> None:
        """The global module hooks for now: "detail" (scopes and observations),
        "ran" (only which trees worked) or "none". Never called from inside a
        module hook: torch iterates the hook dicts while it calls them."""
        import torch.nn.modules.module as hooks

        self.swap = None
        if kind == "ran" and not self.idle_trees:
            kind = "none"
        if kind == self.kind:
            return
        for handle in self._handles:
            handle.remove()
        if kind != "none" and self._undo_warning_filter is None:
            self._undo_warning_filter = compat.hide_compile_hook_warning()
        elif kind == "none" and self._undo_warning_filter is not None:
            self._undo_warning_filter()
            self._undo_warning_filter = None
        if kind == "detail":
            self._handles = [
                hooks.register_module_forward_pre_hook(self._forward_pre_hook),
                hooks.register_module_forward_hook(self._forward_hook, always_call=True),
            ]
        elif kind == "ran":
            self._handles = [hooks.register_module_forward_pre_hook(self._ran_hook)]
        else:
            self._handles = []
        self.kind = kind

    def apply_swap(self) -> None:
        """At a step's end, outside any module hook: the change a hook asked for."""
        if self.swap is not None:
            self.set(self.swap)

    def detail_ended(self, in_module_hook: bool) -> None:
        """Cheap hooks from now on (at the next step's end when torch is iterating the hooks)."""
        self.idle_trees = self.trees_not_run()
        if in_module_hook:
            self.swap = "ran"
        else:
            self.set("ran")

    def ran_after_detail(self) -> None:
        """Modules that ran after the detail worked too."""
        for key in self.ran_ids:
            name = self._layers.names.get(key)
            if name:
                self.ran.add(name)

    def close_scopes(self) -> None:
        stack = self._stack()
        while stack:
            _, scope = stack.pop()
            try:
                self._scope_exit(scope)
            except Exception:
                pass

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.kind = "none"
        if self._undo_warning_filter is not None:
            self._undo_warning_filter()
            self._undo_warning_filter = None
        self.close_scopes()  # scopes a failed forward left open

    def _stack(self) -> list:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _ran_hook(self, module: Any, args: tuple) -> None:
        """Outside the detail the only module hook: which trees worked (a
        model that ran only there still gets its advice). It goes once every
        tree known has run: any global module hook sends every module call
        through torch's slow path (~14 µs a call here, more than a small
        model's step spends in its layers)."""
        if _not_eager():
            return
        key = id(module)
        if key in self.ran_ids:
            return
        self.ran_ids.add(key)
        name = self._layers.names.get(key)
        if name is not None:
            self.idle_trees.discard(self._layers.root_of(name))
            if not self.idle_trees:
                self.swap = "none"

    def _forward_pre_hook(self, module: Any, args: tuple) -> None:
        if _not_eager():  # first: dynamo and the JIT tracer see nothing else of the hook
            return
        if not self._detailed():  # the detail ended in a hook: cheap hooks from the next step
            self._ran_hook(module, args)
            return
        if self._over_budget():
            self._end_detail("budget", in_module_hook=True)
            return
        stack = self._stack()
        parent = stack[-1][0] if stack else None
        name = self._layers.qualname(module, parent)
        self.ran.add(name)
        # A forward that backward runs again (checkpoint recomputation) is not
        # a call of the model: its arguments are no inputs.
        if parent is None and self._graph_task_id() == -1:
            self._root_called(args)
        if id(module) not in self._params_seen:
            self._first_call(module, name)
        prefix = LAYER_PREFIX if self._torch.is_grad_enabled() else NOGRAD_LAYER_PREFIX
        # The ops behind torch.autograd.profiler.record_function, called
        # directly: the class adds CUPTI and torch-function checks per call.
        stack.append((module, self._scope_enter(prefix + name, None)))

    def _root_called(self, args: tuple) -> None:
        """A model was called with `args`: its inputs."""
        self.root_calls += 1
        if self._on_root_call is not None:
            self._on_root_call()
        self._observer.observe_all(args, "input", depth=2)
        if len(self.input_shapes) < 8:
            for a in args:
                if isinstance(a, self._torch.Tensor) and list(a.shape) not in self.input_shapes:
                    self.input_shapes.append(list(a.shape))

    def _first_call(self, module: Any, name: str) -> None:
        """A module's first call in the detail: its parameters and buffers."""
        self._params_seen.add(id(module))
        if type(module).__name__ in _COMPILED_MODULES:
            self._compiled_ran(f"{name} ({type(module).__name__})")
        for p in module.parameters(recurse=False):
            self._param_layer.setdefault(id(p), name)
            self._observer.observe(p, "parameter", name)
        for b in module.buffers(recurse=False):
            self._observer.observe(b, "parameter", name)

    def _forward_hook(self, module: Any, args: tuple, output: Any) -> None:
        if _not_eager():
            return
        stack = self._stack()
        if not any(m is module for m, _ in stack):
            return  # its forward began before the profiler did
        self.output_bytes[id(module)] = _tensor_bytes(output, self._torch.Tensor)
        while stack:  # pop to this module, closing scopes a failed forward left open
            m, scope = stack.pop()
            self._scope_exit(scope)
            if m is module:
                break
