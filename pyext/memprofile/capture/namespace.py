"""What the notebook's namespace keeps alive after the run: large arrays and
tensors held by variables (and containers in them, two levels deep) or by
IPython's output cache (`Out`, `_`, `__`, `___`, `_12`).

The notebook-leak and streaming rules read it. Only frameworks the process has
already imported are looked at; nothing is imported here. Storage shared by
views is counted once, under the first name found (variables before the
output cache).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

from memprofile.capture.base import RawCapture

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


def graph_saved_bytes(tensor: Any) -> int | None:
    """Bytes of the tensors a tensor's autograd graph still saves for backward
    (parameters and the tensor itself excluded: they stay anyway), or None
    when it has no graph. After backward() the saved tensors are freed and the
    graph holds nothing: 0. Reading a freed `_saved_*` attribute raises."""
    fn = getattr(tensor, "grad_fn", None)
    if fn is None:
        return None
    try:
        own = tensor.untyped_storage().data_ptr()
    except Exception:
        own = 0
    from memprofile.capture import torch_compat  # the walk reads torch's private `_saved_*`

    seen_storages: set[int] = {own}
    total = 0
    for t in torch_compat.saved_tensors(fn, MAX_GRAPH_NODES):
        if not hasattr(t, "untyped_storage") or (t.requires_grad and t.grad_fn is None):
            continue  # not a tensor, or a parameter (a leaf that needs grad)
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
        except Exception:
            continue
        if ptr and ptr not in seen_storages:
            seen_storages.add(ptr)
            total += storage.nbytes()
    return total


class _Sizer:
    """(key, bytes, type, shape, dtype, device, bytes its graph saves or None) of an array-like, or None."""

    def __init__(self) -> None:
        self.torch = sys.modules.get("torch")
        self.np = sys.modules.get("numpy")
        tf = sys.modules.get("tensorflow")
        self.tf = tf if tf is not None and hasattr(tf, "is_tensor") else None

    def __call__(self, value: Any) -> tuple | None:
        torch, np, tf = self.torch, self.np, self.tf
        if torch is not None and isinstance(value, torch.Tensor):
            try:
                storage = value.untyped_storage()
                return (("torch", storage.data_ptr()), storage.nbytes(), "torch.Tensor", list(value.shape),
                        str(value.dtype).replace("torch.", ""), str(value.device), graph_saved_bytes(value))
            except Exception:  # meta, sparse or otherwise storage-less tensors
                return None
        if np is not None and isinstance(value, np.ndarray):
            base = value
            while isinstance(base.base, np.ndarray):
                base = base.base
            return (("numpy", id(base)), base.nbytes, "numpy.ndarray", list(value.shape), str(value.dtype), "cpu",
                    None)
        if tf is not None and (tf.is_tensor(value) or isinstance(value, tf.Variable)):
            try:
                n = value.shape.num_elements()
                if n is None:
                    return None
                kind = "tf.Variable" if isinstance(value, tf.Variable) else "tf.Tensor"
                return (("tf", id(value)), n * value.dtype.size, kind, [int(d) for d in value.shape],
                        value.dtype.name, str(getattr(value, "device", "")) or "cpu", None)
            except Exception:  # symbolic (graph) tensors have no buffer
                return None
        return None


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
        if take(name, path, item, via) or left <= 0:
            continue
        children: list[tuple[str, Any, int]] = []
        if isinstance(item, dict):
            if path == "Out":
                children = [(f"Out[{k}]", v, left - 1) for k, v in list(item.items())[-MAX_ITEMS:]]
            else:
                children = [(f"{path}[{k!r}]", v, left - 1) for k, v in list(item.items())[:MAX_ITEMS]]
        elif isinstance(item, list | tuple):
            children = [(f"{path}[{i}]", v, left - 1) for i, v in enumerate(item[:MAX_ITEMS])]
        stack.extend(reversed(children))


def scan_kept(namespace: dict) -> list[dict]:
    """Every array/tensor of at least MIN_BYTES the namespace reaches, largest first."""
    size_of = _Sizer()
    if size_of.torch is None and size_of.np is None and size_of.tf is None:
        return []
    found: dict[tuple, dict] = {}

    def take(variable: str, path: str, value: Any, via: str) -> bool:
        facts = size_of(value)
        if facts is None:
            return False
        key, nbytes, kind, shape, dtype, device, saved = facts
        # A small tensor that holds an autograd graph can keep gigabytes alive;
        # one whose graph backward already freed keeps only its own data.
        graph = bool(saved)
        if (nbytes >= MIN_BYTES or graph) and key not in found:
            found[key] = {"name": path, "bytes": nbytes, "type": kind, "shape": shape, "dtype": dtype,
                          "device": device, "via": via, "graph": graph, "graph_bytes": saved or 0,
                          "_id": id(value), "_ref": _weak(value)}
        return True

    walk_namespace(namespace, take)
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


class NamespaceCollector:
    """Remembers what the namespace held at the start, scans it at the end."""

    name = "namespace"

    def __init__(self, namespace: dict | None = None) -> None:
        self.namespace = namespace if namespace is not None else {}
        #: name -> a weak reference to what it held at the start (or its id(),
        #: for objects that take no weak reference).
        self._before: dict[str, Any] = {}
        self._output: tuple[int, object] | None = None

    def start(self, origin: float | None = None) -> None:
        self._before = {d["name"]: d["_ref"] or d["_id"] for d in scan_kept(self.namespace)}

    def expect_output(self, count: int, value: object) -> None:
        """A value the notebook caches as Out[count] after the run."""
        self._output = (count, value)

    def stop(self) -> RawCapture:
        output, self._output = self._output, None
        namespace = self.namespace
        if output is not None:
            cache = namespace.get("Out")
            namespace = {**namespace, "Out": {**(cache if isinstance(cache, dict) else {}), output[0]: output[1]}}
        kept = scan_kept(namespace)
        for d in kept:
            d["new"] = not _same(self._before.get(d["name"]), d.pop("_id"), d.pop("_ref"))
        return RawCapture(collector=self.name, kept=kept)
