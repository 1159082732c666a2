"""What the notebook's namespace keeps alive after the run: large arrays and
tensors held by variables (and containers in them, two levels deep) or by
IPython's output cache (`Out`, `_`, `__`, `___`, `_12`).

The notebook-leak and streaming rules read it. Only frameworks the process has
already imported are looked at; nothing is imported here. Storage shared by
views is counted once, under the first name found (variables before the
output cache).
"""

from __future__ import annotations

import ast
import collections
import itertools
import sys
import types
import weakref
from collections.abc import Callable
from typing import Any

from memprofile.capture.base import RawCapture
from memprofile.capture.kept import GrownContainer, GrownItem, KeptObject

#: Smaller objects are not worth naming in a memory report.
MIN_BYTES = 1 << 20
MAX_ITEMS = 10_000
#: Values looked at inside one variable's containers: a list of 10,000 lists
#: of 10,000 floats must not cost the cell 10^8 checks, nor hide the others.
MAX_VISITS_PER_NAME = 20_000
MAX_KEPT = 50
_DEPTH = 2


def _is_output_cache(name: str) -> bool:
    return name in ("Out", "_", "__", "___") or (name.startswith("_") and name[1:].isdigit())


#: Autograd nodes looked at behind one tensor: enough for any model's graph to
#: show whether it still holds saved tensors, bounded for a pathological one.
MAX_GRAPH_NODES = 5_000


def graph_storages(tensor: Any) -> dict[int, int] | None:
    """The storages (pointer -> bytes) a tensor's autograd graph still saves
    for backward (parameters and the tensor itself excluded: they stay
    anyway), or None when it has no graph. After backward() the saved tensors
    are freed and the graph holds nothing: {}. Reading a freed `_saved_*`
    attribute raises."""
    fn = getattr(tensor, "grad_fn", None)
    if fn is None:
        return None
    try:
        own = tensor.untyped_storage().data_ptr()
    except Exception:
        own = 0
    from memprofile.capture.torch import compat as torch_compat  # the walk reads torch's private `_saved_*`

    found: dict[int, int] = {}
    for t in torch_compat.saved_tensors(fn, MAX_GRAPH_NODES):
        if not hasattr(t, "untyped_storage") or _parameter(t):
            continue  # not a tensor, or a parameter (a leaf that needs grad) or a view of one
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
        except Exception:
            continue
        if ptr and ptr != own:
            found[ptr] = storage.nbytes()
    return found


def _parameter(t: Any) -> bool:
    """A leaf that needs grad, or a view of one (a Linear's `weight.t()` saved for backward:
    the parameter's own storage, which detaching the output does not free)."""
    try:
        base = t._base if t._is_view() else None
    except Exception:
        base = None
    return any(x is not None and x.requires_grad and x.grad_fn is None for x in (t, base))


def graph_saved_bytes(tensor: Any) -> int | None:
    """Bytes of the tensors a tensor's autograd graph still saves (graph_storages)."""
    found = graph_storages(tensor)
    return None if found is None else sum(found.values())


class _Sizer:
    """(key, bytes, type, shape, dtype, device, bytes its graph saves or None) of an array-like, or None
    (`bytes_of`: the same without the graph)."""

    def __init__(self) -> None:
        self.torch = sys.modules.get("torch")
        self.np = sys.modules.get("numpy")
        tf = sys.modules.get("tensorflow")
        self.tf = tf if tf is not None and hasattr(tf, "is_tensor") else None

    def __call__(self, value: Any) -> tuple | None:
        facts = self.bytes_of(value)
        if facts is None:
            return None
        torch = self.torch
        return (*facts, graph_saved_bytes(value) if torch is not None and isinstance(value, torch.Tensor) else None)

    def bytes_of(self, value: Any) -> tuple | None:
        """(key, bytes, type, shape, dtype, device) of an array-like, or None; no graph walk."""
        torch, np, tf = self.torch, self.np, self.tf
        if torch is not None and isinstance(value, torch.Tensor):
            try:
                if has_no_memory(value):
                    return None  # a shape without memory (meta device, FakeTensor): owns no bytes
                storage = value.untyped_storage()
                ptr = storage.data_ptr()
                if not ptr:  # no data (an empty tensor; a subclass's storage without memory)
                    return None
                return (
                    ("torch", ptr),
                    storage.nbytes(),
                    "torch.Tensor",
                    list(value.shape),
                    str(value.dtype).replace("torch.", ""),
                    str(value.device),
                )
            except Exception:  # sparse or otherwise storage-less tensors, a subclass whose storage raises
                return None
        if np is not None and isinstance(value, np.ndarray):
            base = value
            while isinstance(base.base, np.ndarray):
                base = base.base
            return ("numpy", id(base)), base.nbytes, "numpy.ndarray", list(value.shape), str(value.dtype), "cpu"
        if tf is not None and (tf.is_tensor(value) or isinstance(value, tf.Variable)):
            try:
                n = value.shape.num_elements()
                if n is None:
                    return None
                kind = "tf.Variable" if isinstance(value, tf.Variable) else "tf.Tensor"
                return (
                    ("tf", id(value)),
                    n * value.dtype.size,
                    kind,
                    [int(d) for d in value.shape],
                    value.dtype.name,
                    str(getattr(value, "device", "")) or "cpu",
                )
            except Exception:  # symbolic (graph) tensors have no buffer
                return None
        return None


def has_no_memory(tensor: Any) -> bool:
    """A tensor that is a shape without memory: on the meta device, or a
    FakeTensor (torch._subclasses; torch.export's and torch.compile's
    tracing), which reports a real device and a storage size, and warns when
    its data pointer is read. FakeTensor is only looked up where torch
    already imported it."""
    if getattr(tensor, "is_meta", False):
        return True
    fake = sys.modules.get("torch._subclasses.fake_tensor")
    cls = getattr(fake, "FakeTensor", None)
    return cls is not None and isinstance(tensor, cls)


def walk_namespace(namespace: dict, take: Callable[[str, str, Any, str], bool], depth: int = _DEPTH) -> None:
    """Offer `take(variable, path, value, via)` each notebook variable and what
    its lists, tuples and dicts hold, `depth` levels down (path: `cache['x']`,
    `Out[12]`; via: "variable" or "output_cache"). A value `take` keeps (it
    returns True) is not looked into.

    Variables come before IPython's output cache (Out, _, __, ___, _12), so an
    object in both is named by its variable; IPython's other private names
    (_ih, _oh, _exit_code...) are skipped. At most MAX_ITEMS of a container
    (of Out, the newest) and MAX_VISITS_PER_NAME values inside one variable.
    The one walk the collectors share (this scan, torch's and Keras's)."""
    for name, value in sorted(namespace.items(), key=lambda kv: _is_output_cache(kv[0])):
        if name.startswith("_") and not _is_output_cache(name):
            continue
        via = "output_cache" if _is_output_cache(name) else "variable"
        _walk_variable(name, value, via, take, depth)


def _walk_variable(name: str, value: Any, via: str, take: Callable[[str, str, Any, str], bool], depth: int) -> None:
    """One variable, depth first, parents before children, at most
    MAX_VISITS_PER_NAME values. A loop over a stack, not a recursive closure:
    a closure refers to itself (a cycle), and until the cyclic GC ran it kept
    what `take` collected (the notebook's tensors) alive into the cell."""
    budget = MAX_VISITS_PER_NAME
    stack: list[tuple[str, Any, int]] = [(name, value, depth)]
    while stack and budget > 0:
        path, item, left = stack.pop()
        budget -= 1
        children: list[tuple[str, Any, int]] = []
        try:
            if take(name, path, item, via) or left <= 0:
                continue
            if isinstance(item, dict):
                if path == "Out":
                    children = [(f"Out[{k}]", v, left - 1) for k, v in list(item.items())[-MAX_ITEMS:]]
                else:
                    children = [(f"{path}[{k!r}]", v, left - 1) for k, v in list(item.items())[:MAX_ITEMS]]
            elif isinstance(item, list | tuple):
                children = [(f"{path}[{i}]", v, left - 1) for i, v in enumerate(item[:MAX_ITEMS])]
        except Exception:  # a dead weakref.proxy, a raising __class__ or __repr__: skipped, never the walk's end
            continue
        stack.extend(reversed(children))


def scan_kept(namespace: dict) -> list[dict]:
    """Every array/tensor of at least MIN_BYTES the namespace reaches, largest first."""
    size_of = _Sizer()
    if size_of.torch is None and size_of.np is None and size_of.tf is None:
        return []
    found: dict[tuple, dict] = {}
    storages: dict[tuple, dict[int, int]] = {}  # what each one's graph saves

    def take(variable: str, path: str, value: Any, via: str) -> bool:
        facts = size_of(value)
        if facts is None:
            return False
        key, nbytes, kind, shape, dtype, device, saved = facts
        # A small tensor that holds an autograd graph can keep gigabytes alive;
        # one whose graph backward already freed keeps only its own data.
        graph = bool(saved)
        if (nbytes >= MIN_BYTES or graph) and key not in found:
            storages[key] = (graph_storages(value) or {}) if graph else {}
            found[key] = {
                "name": path,
                "bytes": nbytes,
                "type": kind,
                "shape": shape,
                "dtype": dtype,
                "device": device,
                "via": via,
                "graph": graph,
                "graph_bytes": saved or 0,
                "_id": id(value),
                "_ref": _weak(value),
            }
        return True

    walk_namespace(namespace, take)
    # Graphs share what they save (a loss's holds its logits'), or do not (five outputs of
    # five forwards): the largest claims its storages first, each other its own rest.
    claimed: set[int] = set()
    for key in sorted(found, key=lambda k: -found[k]["graph_bytes"]):
        own = {ptr: n for ptr, n in storages[key].items() if ptr not in claimed}
        found[key]["graph_own_bytes"] = sum(own.values())
        claimed.update(own)
    return sorted(found.values(), key=lambda d: -d["bytes"])[:MAX_KEPT]


def _weak(value: Any) -> weakref.ref | None:
    try:
        return weakref.ref(value)
    except TypeError:
        return None


def _same(before: Any, now_id: int, now_ref: weakref.ref | None) -> bool:
    """Whether a name holds the object it held at the start. By identity
    where a weak reference was kept: an id() alone is reused when the old
    object is freed and a new one lands at its address (a cell that rebinds
    `logits` to a tensor of the same size, say)."""
    if isinstance(before, weakref.ref):
        old = before()
        return old is not None and now_ref is not None and old is now_ref()
    return before is not None and before == now_id


#: Containers whose growth is looked at: variables, and containers one level
#: inside a dict or list variable (`stats["loss"]`, `logs[0]`).
_GROWN_DEPTH = 1
#: Containers reported, largest first.
MAX_GROWN = 20


def _is_container(value: Any) -> bool:
    return isinstance(value, list | dict | collections.deque)


def _containers(namespace: dict) -> dict[str, tuple[int, int]]:
    """path -> (id, length) of each list, dict or deque a variable holds, and
    of those one level inside it. Ids and lengths only: a strong reference
    would keep a container the cell deletes alive, and lists take no weak one."""
    found: dict[str, tuple[int, int]] = {}

    def take(variable: str, path: str, value: Any, via: str) -> bool:
        try:
            if via != "variable" or not _is_container(value):
                return True  # the output cache grows by design; arrays are not looked into
            found[path] = (id(value), len(value))
        except Exception:  # a dead weakref.proxy, a raising __class__: not the user's container
            return True
        return False

    walk_namespace(namespace, take, depth=_GROWN_DEPTH)
    # An object's own containers (`trainer.history`, a loop class's `self.losses`): one level of
    # public attributes of the objects variables hold (not modules, classes or functions).
    for name, value in list(namespace.items()):
        try:
            attributes = _public_attributes(value) if not name.startswith("_") else {}
            for attr, inner in attributes.items():
                if _is_container(inner):
                    found[f"{name}.{attr}"] = (id(inner), len(inner))
        except Exception:  # any object the namespace holds, however it behaves, is skipped
            continue
    return found


#: Attributes of one object looked at for containers.
MAX_ATTRIBUTES = 200


def _framework_object(value: Any) -> bool:
    """A model, layer or optimizer of a framework: its containers (an
    optimizer's `state`, `param_groups`) fill by design, not per step."""
    module = type(value).__module__ or ""
    if module.split(".")[0] in ("torch", "keras", "tensorflow", "tf_keras", "transformers", "accelerate"):
        return True
    torch = sys.modules.get("torch")  # a subclass of the user's: its optimizer's state is still by design
    optimizer = getattr(getattr(torch, "optim", None), "Optimizer", None)
    return optimizer is not None and isinstance(value, optimizer)


def _public_attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, type | types.ModuleType | types.FunctionType | types.MethodType) or _framework_object(value):
        return {}
    try:
        attributes = vars(value)
    except TypeError:  # no __dict__
        return {}
    if not isinstance(attributes, dict):
        return {}
    return {k: v for k, v in itertools.islice(attributes.items(), MAX_ATTRIBUTES) if not k.startswith("_")}


def _added(value: Any, before: int, most: int) -> list:
    """The items a container gained, newest last: a list's or deque's tail, a
    dict's newest values (insertion order); at most `most`, without copying
    the container (a list of millions that gained one item)."""
    n = min(len(value) - before, most)
    if n <= 0:
        return []
    if isinstance(value, list):
        return value[-n:]
    tail = reversed(value.values()) if isinstance(value, dict) else reversed(value)
    return list(itertools.islice(tail, n))[::-1]


def _item_kind(item: Any) -> str:
    return (
        "tuple"
        if isinstance(item, tuple)
        else "list"
        if isinstance(item, list)
        else "dict"
        if isinstance(item, dict)
        else "array"
    )


#: Items whose autograd graphs are walked (a graph can have thousands of
#: nodes); the rest are counted at the walked ones' average.
MAX_GRAPH_ITEMS = 32
#: Values looked at inside one gained tuple, list or dict.
MAX_INNER = 16
#: Gained items sized over all containers: the scan at the cell's end stays a
#: fraction of a second whatever the namespace holds.
MAX_SIZED_ITEMS = 50_000


def _size_items(items: list, size_of: _Sizer, held: set) -> dict | None:
    """Bytes the items hold (storages counted once, an item's tuple or dict
    looked into one level), bytes their autograd graphs save beyond what
    variables hold anyway (`x`, fed to every step), and what the largest
    item is."""
    seen: set = set()
    saved: dict[int, int] = {}
    total = walked = with_graph = 0
    largest: tuple | None = None
    kinds = {_item_kind(item) for item in items[:MAX_GRAPH_ITEMS]}
    for item in items:
        values = (
            list(item.values())[:MAX_INNER]
            if isinstance(item, dict)
            else list(item[:MAX_INNER])
            if isinstance(item, list | tuple)
            else [item]
        )
        for value in values:
            facts = size_of.bytes_of(value)
            if facts is None:
                continue
            key, nbytes, kind, shape, dtype, device = facts
            if key in seen:
                continue
            seen.add(key)
            total += nbytes
            if getattr(value, "grad_fn", None) is not None:
                with_graph += 1
                if walked < MAX_GRAPH_ITEMS:
                    walked += 1
                    saved.update(graph_storages(value) or {})
            if largest is None or nbytes > largest[1]:
                largest = facts
    if largest is None:
        return None
    graph = sum(n for ptr, n in saved.items() if ("torch", ptr) not in held and ("torch", ptr) not in seen)
    if walked:
        graph = graph * with_graph // walked
    _key, nbytes, kind, shape, dtype, device = largest
    return {
        "bytes": total,
        "graph_bytes": graph,
        "items": kinds.pop() if len(kinds) == 1 else "mixed",
        "item": {"type": kind, "shape": shape, "dtype": dtype, "device": device, "bytes": nbytes},
    }


def _held(namespace: dict, size_of: _Sizer) -> set:
    """The storages the namespace's variables hold directly (`x`, `model`'s weights are not: they stay anyway)."""
    held = set()
    for name, value in list(namespace.items()):
        try:
            facts = size_of.bytes_of(value) if not name.startswith("_") else None
        except Exception:  # a dead weakref.proxy, a raising __class__: holds nothing we can see
            continue
        if facts is not None:
            held.add(facts[0])
    return held


def scan_grown(namespace: dict, before: dict[str, tuple[int, int]]) -> list[GrownContainer]:
    """The containers that gained arrays or tensors during the run (or were
    made in it), with what the gain holds: a list a training loop appends
    each step's outputs to. Largest first."""
    size_of = _Sizer()
    if size_of.torch is None and size_of.np is None and size_of.tf is None:
        return []
    found: list[GrownContainer] = []
    held = _held(namespace, size_of)
    left = MAX_SIZED_ITEMS
    for path, (ident, length) in _containers(namespace).items():
        if left <= 0:
            break
        value = _lookup(namespace, path)
        if value is None:
            continue
        old = before.get(path)
        same = old is not None and old[0] == ident
        start = old[1] if old is not None and same and old[1] <= length else 0
        try:
            added = _added(value, start, min(MAX_ITEMS, left))
            left -= len(added)
            sized = _size_items(added, size_of, held)
        except Exception:  # an item that raises when looked at: the container is not reported
            continue
        if sized is None:
            continue
        kind = "dict" if isinstance(value, dict) else "deque" if isinstance(value, collections.deque) else "list"
        found.append(
            GrownContainer(
                name=path,
                type=kind,
                added=length - start,
                length=length,
                new=not same,
                **{**sized, "item": GrownItem(**sized["item"])},
            )
        )
    return sorted(found, key=lambda c: -(c.bytes + c.graph_bytes))[:MAX_GROWN]


def _lookup(namespace: dict, path: str) -> Any:
    """The container at a path `_containers` wrote: `name`, `name[key]`, `name[i]` or `name.attr`."""
    if "." in path and "[" not in path:
        name, attr = path.split(".", 1)
        try:
            return _public_attributes(namespace.get(name)).get(attr)
        except Exception:
            return None
    name, _, rest = path.partition("[")
    value = namespace.get(name)
    if not rest or value is None:
        return value
    try:
        key = ast.literal_eval(rest[:-1])
        return value[key]
    except Exception:
        return None


class NamespaceCollector:
    """Remembers what the namespace held at the start, scans it at the end."""

    name = "namespace"

    def __init__(self, namespace: dict | None = None) -> None:
        self.namespace = namespace if namespace is not None else {}
        #: name -> a weak reference to what it held at the start (or its id(),
        #: for objects that take no weak reference).
        self._before: dict[str, Any] = {}
        self._output: tuple[int, object] | None = None
        self._containers: dict[str, tuple[int, int]] = {}

    def start(self, origin: float | None = None) -> None:
        self._before = {d["name"]: d["_ref"] or d["_id"] for d in scan_kept(self.namespace)}
        self._containers = _containers(self.namespace)

    def expect_output(self, count: int, value: object) -> None:
        """A value the notebook caches as Out[count] after the run."""
        self._output = (count, value)

    def stop(self) -> RawCapture:
        output, self._output = self._output, None
        namespace = self.namespace
        if output is not None:
            cache = namespace.get("Out")
            namespace = {**namespace, "Out": {**(cache if isinstance(cache, dict) else {}), output[0]: output[1]}}
        kept = [
            KeptObject(
                **{k: v for k, v in d.items() if not k.startswith("_")},
                new=not _same(self._before.get(d["name"]), d["_id"], d["_ref"]),
            )
            for d in scan_kept(namespace)
        ]
        grown = scan_grown(self.namespace, self._containers)
        return RawCapture(collector=self.name, kept=kept, grown=grown)
