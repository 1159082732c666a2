"""What existed before the run: on CPU the profiler only sees blocks allocated while it runs, so
the tensors reachable from the namespace (globals, `Out`, modules, optimizers, containers two
levels deep) are the baseline, each with its kind and layer, and a weakref finaliser on each
storage tells when one is freed during the run. On CUDA the allocator's own counters give the
exact baseline (ledger.add_cuda_baseline)."""

from __future__ import annotations

import time
import weakref
from typing import Any

from memprofile.capture.namespace import has_no_memory, walk_namespace

#: When one storage is seen as several kinds, the first of these wins.
CATEGORY_PRIORITY = ("parameter", "optimizer_state", "gradient", "input")
_RANK = {c: i for i, c in enumerate(CATEGORY_PRIORITY)}


def better(new: str, old: str) -> bool:
    """Whether `new` names a storage's kind better than `old` (called per observation)."""
    return _RANK.get(new, len(_RANK)) < _RANK.get(old, len(_RANK))


def storage_bytes(t: Any) -> int:
    try:
        return t.untyped_storage().nbytes()
    except Exception:  # storage-less tensors
        return 0


def own_bytes(t: Any) -> int:
    """A tensor's bytes in its storage: the storage's, unless the tensor is a
    slice of a larger one (DDP's gradient_as_bucket_view makes each gradient a
    view of a bucket that several layers share: each layer has its slice)."""
    whole = storage_bytes(t)
    return min(whole, t.nelement() * t.element_size()) if t.is_contiguous() else whole


class Storage:
    """What we know of one storage seen outside the profiler's events."""

    __slots__ = ("ptr", "nbytes", "device", "category", "shape", "dtype", "freed_ns", "layer")

    def __init__(
        self, ptr: int, nbytes: int, device: str, category: str, shape: list[int], dtype: str, layer: str = ""
    ):
        self.ptr, self.nbytes, self.device = ptr, nbytes, device
        self.category, self.shape, self.dtype = category, shape, dtype
        self.freed_ns: int | None = None
        self.layer = layer  # the module owning the parameter (its gradient, its optimizer state)


def namespace_objects(
    namespace: dict[str, Any], torch: Any, opt_names: dict[int, str]
) -> tuple[list[tuple[str, Any]], list[Any], list[Any]]:
    """The namespace's modules (with the variable that holds each), optimizers and tensors;
    each optimizer's path goes into `opt_names`."""
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
            opt_names.setdefault(id(value), path)
        else:
            return False
        return True

    walk_namespace(namespace, take)
    return modules, optimizers, tensors


class Baseline:
    """The storages found before the run, by address."""

    def __init__(self, torch: Any) -> None:
        self.storages: dict[int, Storage] = {}
        #: id(optimizer) -> the bytes of its state at the start
        self.opt_state_start: dict[int, int] = {}
        self._torch = torch
        self._finalizers: list[weakref.finalize] = []

    def scan(
        self,
        modules: list[tuple[str, Any]],
        optimizers: list[Any],
        tensors: list[Any],
        names: dict[int, str],
        param_layer: dict[int, str],
    ) -> None:
        """Parameters, their gradients and optimizer state belong to the layer
        that owns the parameter (`names`: id(module) -> its qualified name;
        `param_layer`: id(parameter) -> its layer), also when they existed
        before the run; the namespace's other tensors are "other"."""
        for _, m in modules:
            for sub in m.modules():
                owner = names.get(id(sub), "")
                for p in sub.parameters(recurse=False):
                    self._add(p, "parameter", owner)
                    if p.grad is not None:
                        self._add(p.grad, "gradient", owner)
                for b in sub.buffers(recurse=False):
                    self._add(b, "parameter", owner)
        for opt in optimizers:
            self._scan_optimizer(opt, param_layer)
        for t in tensors:
            self._add(t, "other")

    def _scan_optimizer(self, opt: Any, layers: dict[int, str]) -> None:
        state_bytes = 0
        for group in opt.param_groups:
            for p in group["params"]:
                self._add(p, "parameter", layers.get(id(p), ""))
                if p.grad is not None:
                    self._add(p.grad, "gradient", layers.get(id(p), ""))
        for p, state in opt.state.items():
            for v in state.values():
                if isinstance(v, self._torch.Tensor):
                    self._add(v, "optimizer_state", layers.get(id(p), ""))
                    state_bytes += storage_bytes(v)
        self.opt_state_start[id(opt)] = state_bytes

    def _add(self, t: Any, category: str, layer: str = "") -> None:
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
        old = self.storages.get(ptr)
        if old is None:
            record = self.storages[ptr] = Storage(
                ptr, nbytes, device, category, list(t.shape), str(t.dtype).replace("torch.", ""), layer
            )
            if device == "cpu":
                # The CPU profiler never saw this block allocated, so it
                # will not report its free: a finaliser on the storage does.
                self._finalizers.append(weakref.finalize(s, _freed, record))
        else:
            if better(category, old.category):
                old.category, old.shape, old.dtype = category, list(t.shape), str(t.dtype).replace("torch.", "")
            old.layer = old.layer or layer

    def detach(self) -> None:
        """The run ended: frees are no longer watched."""
        for f in self._finalizers:
            f.detach()
        self._finalizers = []


def _freed(record: Storage) -> None:
    record.freed_ns = time.time_ns()
