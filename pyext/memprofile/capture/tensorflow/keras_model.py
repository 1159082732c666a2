"""What the notebook's Keras objects own: layers by path, their variables, the
optimizers' slots, and the address of every buffer (to recognise it among
the allocator's events).

Keras 3 (the Keras of TF 2.16+) only. Names: a root model is named by its
variable in the namespace (like PyTorch modules), a layer inside it by its
Keras names joined with "/" from below the root ("encoder/dense_1"), which
is also how TF's op name scopes spell it.
"""

from __future__ import annotations

import ctypes
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from memprofile.capture.namespace import walk_namespace
from memprofile.capture.tensorflow import compat
from memprofile.capture.tensorflow.datasets import Pipelines
from memprofile.capture.tensorflow.step_hooks import MIN_ARRAY_BYTES

#: The suffix Keras and TF add to make a name unique ("dense_1", "Adam_2").
UNIQUIFIED = re.compile(r"_\d+$")

_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass
class Buffer:
    """A tensor or variable buffer found in the namespace."""

    addr: int
    nbytes: int
    category: str  # parameter | optimizer_state | other
    layer: str
    shape: list[int]
    dtype: str
    device: str  # "CPU:0", "GPU:0"


@dataclass
class LayerInfo:
    path: str
    type: str
    parent: str | None
    keras_names: tuple[str, ...]  # the Keras names from the root down
    parameter_bytes: int = 0
    optimizer_state_bytes: int = 0
    #: Shapes of its trainable variables, as TF writes them ("[256,128]").
    trainable_shapes: set[str] = field(default_factory=set)
    trainable_bytes: int = 0


@dataclass
class KerasWorld:
    layers: dict[str, LayerInfo] = field(default_factory=dict)
    by_id: dict[int, str] = field(default_factory=dict)  # id(layer) -> path
    optimizer_names: set[str] = field(default_factory=set)
    buffers: list[Buffer] = field(default_factory=list)
    #: The Keras name chain -> path, for matching op name scopes.
    chains: dict[tuple[str, ...], str] = field(default_factory=dict)
    root_names: set[str] = field(default_factory=set)
    #: The tf.data pipelines of the namespace and of the run (their buffers' lines).
    pipelines: Pipelines = field(default_factory=Pipelines)
    #: The notebook's earlier cells (IPython's `In`), where a pipeline's line may be.
    history: list[str] = field(default_factory=list)
    #: Bytes of the NumPy arrays of the namespace and of fit's arguments: a block
    #: of that size made by no op is TF's copy of one (fit's, from_tensor_slices'): an input.
    input_sizes: set[int] = field(default_factory=set)
    #: id(tf.Variable) -> its layer's path.
    var_paths: dict[int, str] = field(default_factory=dict)
    #: An eager tape's gradients in the run: (buffer address, id(variable), run time).
    gradients: list[tuple[int, int, float]] = field(default_factory=list)


def address(tensor: Any) -> int | None:
    """The data pointer of an eager tensor (CPU or GPU) through DLPack, which
    shares the buffer; None when it cannot be had."""
    import tensorflow as tf

    try:
        capsule = tf.experimental.dlpack.to_dlpack(tensor)
        p = _get_pointer(capsule, b"dltensor")
        return ctypes.c_void_p.from_address(p).value or None
    except Exception:
        return None


def _tf_variable(v: Any) -> Any:
    """The tf.Variable behind a Keras variable (or the variable itself)."""
    return compat.keras_backing_variable(v)


def shape_text(shape: Any) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _children(layer: Any) -> list[Any]:
    children = compat.keras_children(layer)
    if children is not None:
        return [c for c in children if type(c).__name__ != "InputLayer"]
    return list(getattr(layer, "layers", []) or [])


def scan(namespace: dict) -> KerasWorld:
    """Find models, layers, optimizers, variables and tensors reachable from
    the namespace (globals, Out, containers two levels deep)."""
    world = KerasWorld()
    keras = sys.modules.get("keras")
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return world
    layer_cls = getattr(getattr(keras, "layers", None), "Layer", None) if keras else None
    optimizer_cls = getattr(getattr(keras, "optimizers", None), "Optimizer", None) if keras else None
    dataset_cls = getattr(getattr(tf, "data", None), "Dataset", None)
    ndarray = getattr(sys.modules.get("numpy"), "ndarray", None)
    history = namespace.get("In")
    if isinstance(history, list) and all(isinstance(c, str) for c in history[-200:]):
        world.history = list(history)
    layers: list[tuple[str, Any]] = []
    optimizers: list[Any] = []
    loose: list[Any] = []

    def take(variable: str, path: str, value: Any, via: str) -> bool:
        if layer_cls is not None and isinstance(value, layer_cls):
            layers.append((variable, value))
        elif optimizer_cls is not None and isinstance(value, optimizer_cls):
            optimizers.append(value)
        elif isinstance(value, tf.Variable | tf.Tensor) or (keras is not None and isinstance(value, keras.Variable)):
            loose.append(value)
        elif dataset_cls is not None and isinstance(value, dataset_cls):
            world.pipelines.add(value)
        elif ndarray is not None and isinstance(value, ndarray):
            if value.nbytes >= MIN_ARRAY_BYTES:
                world.input_sizes.add(int(value.nbytes))
        else:
            return False
        return True

    walk_namespace(namespace, take)

    for _, layer in layers:  # model.compile("adam") keeps the optimizer on the model only
        opt = getattr(layer, "optimizer", None)
        if optimizer_cls is not None and isinstance(opt, optimizer_cls) and all(o is not opt for o in optimizers):
            optimizers.append(opt)
    owner: dict[int, str] = {}  # id(variable) -> layer path
    var_layer: dict[int, Any] = {}
    _name_layers(world, layers, owner, var_layer)
    world.var_paths = owner
    for opt in optimizers:
        world.optimizer_names.add(str(getattr(opt, "name", "")))
    seen: set[int] = set()
    addrs: set[int] = set()

    def add(v: Any, category: str, layer: str) -> None:
        tv = _tf_variable(v)
        if id(tv) in seen:
            return
        seen.add(id(tv))
        try:
            value = tv.value() if hasattr(tv, "read_value") else tv
            dtype = value.dtype
            nbytes = int(value.shape.num_elements() or 0) * dtype.size
            device = value.device.rsplit("device:", 1)[-1] if value.device else "CPU:0"
        except Exception:
            return
        addr = address(value)
        if addr and nbytes and addr not in addrs:  # two variables can share a buffer until one is written
            addrs.add(addr)
            world.buffers.append(
                Buffer(addr, nbytes, category, layer, [int(d) for d in value.shape], dtype.name, device)
            )

    for vid, path in owner.items():
        add(var_layer[vid], "parameter", path)
    for opt in optimizers:
        _optimizer_slots(world, opt, var_layer, owner, add)
    for t in loose:
        add(t, "parameter" if not isinstance(t, tf.Tensor) else "other", "")
    return world


def _name_layers(
    world: KerasWorld, layers: list[tuple[str, Any]], owner: dict[int, str], var_layer: dict[int, Any]
) -> None:
    """Paths for every layer reachable from the found ones; the largest root
    names a layer also bound to its own variable."""
    unique = {id(layer): (n, layer) for n, layer in reversed(layers)}

    def size(layer: Any) -> int:
        try:
            return len(layer.weights)
        except Exception:
            return 0

    for var, root in sorted(unique.values(), key=lambda nl: -size(nl[1])):
        if id(root) in world.by_id:
            continue
        world.root_names.add(str(root.name))
        # (layer, its path, its parent's path: None for the root, its chain of names)
        stack: list[tuple[Any, str, str | None, tuple[str, ...]]] = [(root, var, None, (str(root.name),))]
        while stack:
            layer, path, parent, chain = stack.pop()
            if id(layer) in world.by_id:
                continue
            world.by_id[id(layer)] = path
            info = world.layers[path] = LayerInfo(path, type(layer).__name__, parent, chain)
            world.chains.setdefault(chain, path)
            children = _children(layer)
            child_vars: set[int] = set()
            for child in children:
                try:
                    child_vars.update(id(_tf_variable(w)) for w in child.weights)
                except Exception:
                    pass
            try:
                own = [w for w in layer.weights if id(_tf_variable(w)) not in child_vars]
                trainable = {id(_tf_variable(w)) for w in layer.trainable_weights}
            except Exception:
                own, trainable = [], set()
            for w in own:
                tv = _tf_variable(w)
                if id(tv) in owner:
                    continue
                owner[id(tv)] = path
                var_layer[id(tv)] = w
                nbytes = _numel(w.shape) * _itemsize(w)
                info.parameter_bytes += nbytes
                if id(tv) in trainable:
                    info.trainable_shapes.add(shape_text(w.shape))
                    info.trainable_bytes += nbytes
            for child in reversed(children):
                child_path = str(child.name) if parent is None else f"{path}/{child.name}"
                stack.append((child, child_path, path, chain + (str(child.name),)))


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _itemsize(v: Any) -> int:
    import tensorflow as tf

    try:
        return tf.as_dtype(v.dtype).size
    except Exception:
        return 4


def _optimizer_slots(world: KerasWorld, opt: Any, var_layer: dict[int, Any], owner: dict[int, str], add) -> None:
    """Slot variables (Adam's momentum and velocity, ...) by the variable they
    belong to: Keras 3 names a slot `<variable path with _>_<slot>`."""
    prefixes = sorted(
        ((str(getattr(v, "path", "")).replace("/", "_") + "_", owner[vid]) for vid, v in var_layer.items()),
        key=lambda p: -len(p[0]),
    )
    try:
        variables = list(opt.variables)
    except Exception:
        return
    for v in variables:
        name = str(getattr(v, "name", ""))
        layer = next((path for prefix, path in prefixes if prefix != "_" and name.startswith(prefix)), "")
        if layer:
            nbytes = _numel(v.shape) * _itemsize(v)
            world.layers[layer].optimizer_state_bytes += nbytes
        add(v, "optimizer_state", layer)


class ScopeResolver:
    """Layer paths for op name scopes.

    TF uniquifies a scope name within a graph by appending "_N", so Keras's
    layer "dense" can appear as scope "dense_1" next to layer "dense_1" as
    "dense_1_2". Names alone are ambiguous; the scopes seen under one parent
    are matched to its children all together: a scope with one possible
    layer takes it first, which settles the rest ("dense_1_2" can only be
    "dense_1", so "dense_1" is "dense").
    """

    def __init__(self, world: KerasWorld, scope_paths: list[tuple[str, ...]]) -> None:
        self._resolved: dict[tuple[str, ...], str] = {}
        children: dict[str | None, dict[str, str]] = {}  # parent path (None: the roots) -> name -> path
        for chain, path in world.chains.items():
            parent = world.chains.get(chain[:-1]) if len(chain) > 1 else None
            children.setdefault(parent, {}).setdefault(chain[-1], path)
        self._children = children
        trie: dict = {}
        for comps in scope_paths:
            node = trie
            for c in comps:
                node = node.setdefault(c, {})
        self._walk(trie, (), None)

    def _walk(self, node: dict, prefix: tuple[str, ...], parent: str | None) -> None:
        if not node:
            return
        assigned = _assign(list(node), self._children.get(parent, {}))
        for comp, sub in node.items():
            path = assigned.get(comp)
            here = prefix + (comp,)
            if path is not None:
                self._resolved[here] = path
                self._walk(sub, here, path)
            elif parent is None:
                self._walk(sub, here, None)  # a wrapper scope ("gradient_tape"): look below it for a root

    def resolve(self, comps: list[str] | tuple[str, ...]) -> str:
        """The deepest layer a scope path names, or ""."""
        comps = tuple(comps)
        for j in range(len(comps), 0, -1):
            path = self._resolved.get(comps[:j])
            if path is not None:
                return path
        return ""


def _assign(scopes: list[str], names: dict[str, str]) -> dict[str, str]:
    """Scope name -> layer path among one parent's children (see ScopeResolver)."""
    options = {s: [n for n in dict.fromkeys((s, UNIQUIFIED.sub("", s))) if n in names] for s in scopes}
    options = {s: o for s, o in options.items() if o}
    out: dict[str, str] = {}
    used: set[str] = set()
    progress = True
    while progress:
        progress = False
        for s, opts in options.items():
            if s in out:
                continue
            free = [n for n in opts if n not in used]
            if len(free) == 1:
                out[s] = names[free[0]]
                used.add(free[0])
                progress = True
    for s, opts in options.items():  # still ambiguous, or a layer called twice: the exact name first
        if s not in out:
            free = [n for n in opts if n not in used] or opts
            out[s] = names[free[0]]
            used.add(free[0])
    return out
