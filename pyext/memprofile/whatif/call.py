"""Code the what-if engine can run again where a run is not a cell: a `@profiled` call
(the function called again with its arguments) and a `with memprofile.profile():` block
inside a function (its body, with the function's locals it reads).

A profile must not keep a call's arguments or a function's locals alive (a batch, a model
the caller drops later). A tensor is kept as its shape, strides, dtype and device
(TensorSpec: a fake run reads no values, so the batch made for the call may die); models,
optimizers and other objects by a weak reference; values a run cannot change (numbers,
strings, dtypes) as they are; tuples, lists and dicts of these are rebuilt. A value that
can be none of these (a generator, an object without weak references) leaves the run
without code to re-execute. Where an object held weakly has died by the time a prediction
asks, the prediction replays the recorded timeline and its note says why (`Gone`).
"""

from __future__ import annotations

import ast
import copy
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: The name the re-executed call finds the profiled function under, and its arguments' prefix
#: (not the parameters' own names: a notebook function the call reaches reads the globals).
CALLEE = "_profiled_function"
ARG = "_arg_"
#: Containers rebuilt from their items, this deep.
DEPTH = 3


class Gone(Exception):
    """A value the re-run needs no longer exists (the caller dropped it)."""


class Unheld(TypeError):
    """A value that can be neither held weakly nor kept as it is."""


def shown(name: str) -> str:
    """A binding's name as the user wrote it: `the argument `loader``, `the function`."""
    if name == CALLEE:
        return "the profiled function"
    return f"the argument `{name[len(ARG) :]}`" if name.startswith(ARG) else f"`{name}`"


#: Past these a value is not held for a re-run (it would cost each call, or keep memory alive):
#: a container's items, a string's or bytes' length.
MAX_ITEMS = 256
MAX_TEXT = 1 << 16


def _kept_as_is(value: Any) -> bool:
    if isinstance(value, str | bytes):
        return len(value) <= MAX_TEXT
    if value is None or isinstance(value, bool | int | float | complex | type | types.ModuleType):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.dtype | torch.device | torch.Size)


def plain_record(value: Any) -> bool:
    """A record of plain values: an argparse or SimpleNamespace, a dataclass instance, whose
    fields are numbers, strings, None, or tuples and lists of them (a training config)."""
    import argparse
    import dataclasses

    if not (
        isinstance(value, argparse.Namespace | types.SimpleNamespace)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
    ):
        return False
    fields = getattr(value, "__dict__", None)
    return isinstance(fields, dict) and len(fields) <= MAX_ITEMS and all(_plain(v) for v in fields.values())


def _plain(value: Any, depth: int = 0) -> bool:
    if _kept_as_is(value) and not isinstance(value, type | types.ModuleType):
        return True
    return (
        depth < 2
        and isinstance(value, tuple | list)
        and len(value) <= MAX_ITEMS
        and all(_plain(v, depth + 1) for v in value)
    )


@dataclass(frozen=True, eq=False)
class TensorSpec:
    """A tensor argument without its memory: what a fake run makes a fake tensor of
    (whatif/shadow.py). One spec per tensor of a call (`f(x, x)` is one tensor)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    device: Any
    requires_grad: bool

    @classmethod
    def of(cls, tensor: Any) -> TensorSpec:
        return cls(tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device, tensor.requires_grad)


def _plain_tensor(value: Any) -> bool:
    """A tensor that is data (a batch, a mask): not a model's parameter, nor a leaf that learns
    (an optimizer may hold it: the fake run must find the same one)."""
    torch = sys.modules.get("torch")
    return (
        torch is not None
        and isinstance(value, torch.Tensor)
        and not isinstance(value, torch.nn.Parameter)
        and not (value.requires_grad and value.is_leaf)
        and value.layout == torch.strided
        and not value.is_nested
    )


def weak_value(value: Any, name: str, depth: int = 0, specs: dict[int, TensorSpec] | None = None) -> Callable[[], Any]:
    """A getter for `value` that does not keep it alive (see the module's docstring); `specs`:
    the call's tensors' specs so far, by the tensor's id (one spec per tensor)."""
    specs = {} if specs is None else specs
    if _kept_as_is(value):
        return lambda: value
    if isinstance(value, str | bytes):
        raise Unheld(f"{shown(name)} is {len(value):,} characters long: too long to keep for a re-run")
    if _plain_tensor(value):
        spec = specs.setdefault(id(value), TensorSpec.of(value))
        return lambda: spec
    if plain_record(value):
        record = copy.deepcopy(value)  # small, and a re-run's writes land in its own copy (shadow.py)
        return lambda: record
    kind = type(value)
    if kind in (tuple, list, dict) and len(value) > MAX_ITEMS:
        raise Unheld(f"{shown(name)} is a {kind.__name__} of {len(value):,} items: too many to hold for a re-run")
    if depth < DEPTH and kind in (tuple, list):
        parts = [weak_value(v, name, depth + 1, specs) for v in value]
        return lambda: kind(p() for p in parts)
    if depth < DEPTH and kind is dict:
        items = [(k, weak_value(v, name, depth + 1, specs)) for k, v in value.items() if _kept_as_is(k)]
        if len(items) != len(value):
            raise Unheld(f"{shown(name)} is a dict with keys that are not plain values")
        return lambda: {k: get() for k, get in items}
    if isinstance(value, types.GeneratorType):
        raise Unheld(f"{shown(name)} is a generator: running the code again would consume it")
    try:
        ref = weakref.ref(value)
    except TypeError:
        raise Unheld(f"{shown(name)} (a {kind.__name__}) cannot be held without keeping it alive") from None

    def get() -> Any:
        obj = ref()
        if obj is None:
            raise Gone(f"{shown(name)} no longer exists: a profile holds a run's objects without keeping them alive")
        return obj

    return get


class Bindings:
    """Names the re-executed code needs beyond the module's globals, held weakly."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        specs: dict[int, TensorSpec] = {}
        self._getters = {name: weak_value(value, name, 0, specs) for name, value in values.items()}

    def resolve(self) -> dict[str, Any]:
        """The values, as they are now; Gone where one has died."""
        return {name: get() for name, get in self._getters.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._getters

    def get(self, name: str) -> Any:
        """One value as it is now; Gone where it has died."""
        return self._getters[name]()

    def names(self) -> list[str]:
        return list(self._getters)

    def signature(self) -> tuple | None:
        """What a re-run's outcome depends on beyond the code: the tensors' specs, the objects'
        identities, the plain values; None where one has died."""
        try:
            values = self.resolve()
        except Gone:
            return None
        return tuple(sorted((name, _signature(v)) for name, v in values.items()))


def _signature(value: Any) -> Any:
    if isinstance(value, TensorSpec):
        return ("tensor", value.shape, value.stride, str(value.dtype), str(value.device), value.requires_grad)
    if type(value) in (tuple, list):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    if type(value) is dict:
        return ("dict", tuple((repr(k), _signature(v)) for k, v in value.items()))
    if _kept_as_is(value):
        return ("value", repr(value)[:200])
    return ("object", type(value).__qualname__, id(value))


class BoundNamespace(Mapping):
    """A module's globals with a call's or a block's bindings over them, each read when asked
    (what a Keras prediction looks its models up in; a binding that has died is not there)."""

    def __init__(self, globals: Mapping[str, Any], bindings: Bindings) -> None:
        self.globals, self.bindings = globals, bindings

    def __getitem__(self, name: str) -> Any:
        if name in self.bindings:
            try:
                return self.bindings.get(name)
            except Gone:
                raise KeyError(name) from None
        return self.globals[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.bindings.names()
        yield from (k for k in self.globals if k not in self.bindings)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class Rerun:
    """What re-executes a run that is not a cell: `source` run in `globals` (a module's,
    which lives on anyway) with `bindings` over them."""

    source: str
    globals: dict[str, Any]
    bindings: Bindings


def call_rerun(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Rerun | str:
    """The call `fn(*args, **kwargs)` as a Rerun, or why it cannot be one."""
    if not isinstance(fn, types.FunctionType):
        return f"{fn!r} is not a plain function"
    inner = inspect.unwrap(fn)
    if inner is not fn and getattr(inner, "__globals__", None) is not fn.__globals__:
        # calling it runs the inner function in its own module: its objects out of the copy's reach
        return f"{fn.__qualname__} is wrapped by a decorator of another module ({fn.__module__})"
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        return f"its arguments do not bind to its signature ({e})"
    bound.apply_defaults()  # every parameter in order: positional ones stay positional
    values: dict[str, Any] = {CALLEE: fn}
    parts: list[str] = []
    for name, value in bound.arguments.items():
        param = bound.signature.parameters[name]
        values[ARG + name] = value
        if param.kind is param.VAR_POSITIONAL:
            parts.append(f"*{ARG}{name}")
        elif param.kind is param.VAR_KEYWORD:
            parts.append(f"**{ARG}{name}")
        elif param.kind is param.KEYWORD_ONLY:
            parts.append(f"{name}={ARG}{name}")
        else:
            parts.append(ARG + name)
    try:
        bindings = Bindings(values)
    except Unheld as e:
        return str(e)
    return Rerun(f"{CALLEE}({', '.join(parts)})\n", fn.__globals__, bindings)


def block_rerun(body: str, frame: types.FrameType) -> Rerun | str:
    """A `with` block's body inside a function as a Rerun: run as a module's code, with the
    function's locals it reads bound over the globals; or why it cannot be one (a `return`,
    `yield`, `nonlocal` or `global` in it: code of the function itself, not of a module)."""
    try:
        tree = ast.parse(body)
    except SyntaxError as e:
        return f"its body does not parse alone ({e.msg})"
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue  # their own returns are theirs (ast.walk still enters them: checked below)
        if isinstance(node, ast.Return | ast.Yield | ast.YieldFrom | ast.Nonlocal | ast.Global | ast.Await):
            if _outside_definitions(tree, node):
                return f"its body has a `{type(node).__name__.lower()}` of the function it is in"
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    local = frame.f_locals
    try:
        bindings = Bindings({name: local[name] for name in read if name in local})
    except Unheld as e:
        return str(e)
    return Rerun(body, frame.f_globals, bindings)


def _outside_definitions(tree: ast.AST, target: ast.AST) -> bool:
    """Whether `target` is not inside a def, lambda or class of `tree`."""

    def visit(node: ast.AST, inside: bool) -> bool | None:
        if node is target:
            return not inside
        nested = inside or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef)
        for child in ast.iter_child_nodes(node):
            found = visit(child, nested)
            if found is not None:
                return found
        return None

    return bool(visit(tree, False))
