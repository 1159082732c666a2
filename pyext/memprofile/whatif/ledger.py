"""Every storage a fake run makes, as an AllocationLog (capture/base.py).

A TorchDispatchMode sits above FakeTensorMode: each op's outputs are fake
tensors whose storages have real sizes but no memory. A storage is counted
when an op first returns it and uncounted when it dies (a weak reference, the
way torch's own MemTracker does it); views share their base's storage and
are counted once. Storages that exist before the run (parameters, gradients,
optimizer state, inputs) are rows from before it, with their kind.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from memprofile.capture.base import ALIVE, AllocationLog
from memprofile.whatif.workspaces import extra_bytes, family_of


class ScalarRead(Exception):
    """The cell read a tensor's value (`.item()`, `if loss < x`): a fake one has none."""


#: What a value read inside an op stands for, by the op's return type.
_SCALAR = {"bool": False, "int": 1, "float": 1.0, "Scalar": 1, "number": 1}


class RealWrite(Exception):
    """An op would write into a real tensor (one the fake copy did not reach)."""


class FakeLedger(TorchDispatchMode):
    """Storages made under the mode; `.log` is the run's AllocationLog."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.log = AllocationLog(device=device, source="fake execution", baseline_exact=True)
        self._row: Any = WeakIdKeyDictionary()  # storage -> row
        self.order = 0
        self.live = 0
        self.peak = 0
        self.scalar_reads = 0
        self._hidden: set[int] = set()  # rows no longer counted (hide_unreachable)
        #: After `close` the log is the run's: a fake copy the run left alive and that dies later
        #: (when the garbage collector gets to it) is not a free of the run.
        self._closed = False
        #: Kernels' own buffers per op family, learned from the measured run (whatif/workspaces.py).
        self.workspaces: dict[str, float] = {}
        #: A layer's weights (and autocast's copies of them) -> the names the measured run's rows
        #: may give its layer: a kernel's buffers learned per layer (Shadow.convert fills it).
        self.layers: Any = WeakIdKeyDictionary()
        #: Real leaves that learn the run reached, with their gradients before it (id -> both).
        self.reached: dict[int, tuple[torch.Tensor, Any]] = {}

    def track(self, tensor: torch.Tensor, category: str = "other", *, before: bool = False, op: str = "") -> None:
        storage = tensor.untyped_storage()
        if storage in self._row:
            return
        size = storage.nbytes()
        self.order += 1
        seq = -1.0 if before else float(self.order)
        row = self.log.add(
            size,
            0.0 if before else seq,
            seq,
            category=category,
            op=op,
            shape=list(tensor.shape),
            dtype=str(tensor.dtype).removeprefix("torch."),
            pre_existing=before,
        )
        self._row[storage] = row
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, row, size)

    def _free(self, row: int, size: int) -> None:
        if self._closed:
            return
        self.order += 1
        self.log.t_free[row] = self.log.seq_free[row] = float(self.order)
        if row not in self._hidden:
            self.live -= size

    def hide_unreachable(self, reachable: Any) -> None:
        """Stop counting the live storages not in `reachable` (storages): what a profile of
        the next run could not find (a kept output's autograd graph): the profiler's baseline
        is the namespace's tensors (capture/torch/baseline.py), and it never sees the rest
        freed."""
        for storage, row in list(self._row.items()):
            if self.log.seq_free[row] == ALIVE and row not in self._hidden and storage not in reachable:
                self._hidden.add(row)
                self.live -= self.log.size[row]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is _READ_VALUE:
            # A value the cell reads (a logged loss, an Adam step count): 1 keeps
            # bias corrections and divisions finite; control flow takes one branch.
            self.scalar_reads += 1
            return 1.0 if args[0].dtype.is_floating_point else (True if args[0].dtype == torch.bool else 1)
        for a in args:  # the real leaves the run reaches (a model held in a closure): Guard restores their grads
            if type(a) is torch.nn.Parameter or (type(a) is torch.Tensor and a.requires_grad):
                self._reached(a)
            elif type(a) in (list, tuple):
                for t in a:
                    if type(t) is torch.nn.Parameter or (type(t) is torch.Tensor and t.requires_grad):
                        self._reached(t)
        op, mutable, family = _op_info(func)
        if mutable and any(_real(a) for a in tree_leaves((args, kwargs))):
            # FakeTensorMode would run it on a fake stand-in; refuse rather than trust that.
            raise RealWrite(f"the code writes into a tensor the fake copy did not reach ({func})")
        try:
            out = func(*args, **(kwargs or {}))
        except DataDependentOutputException:
            # A composite op that reads a value inside (`x in t`, `if t:`): its Python result
            # stands for the read. False for a test (`pad in ids` finds nothing), else 1.
            kind = str(func._schema.returns[0].type) if len(func._schema.returns) == 1 else ""
            if kind not in _SCALAR:
                raise
            self.scalar_reads += 1
            return _SCALAR[kind]
        # Most ops return one tensor or a tuple of them: no pytree walk (the order is the walk's).
        if isinstance(out, torch.Tensor):
            self.track(out, op=op)
        elif type(out) is tuple and all(isinstance(t, torch.Tensor) for t in out):
            for t in out:
                self.track(t, op=op)
        else:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.track(t, op=op)
        if family is not None and family in self.workspaces:
            self._kernel_buffer(op, family, out, args)
        elif op == "aten::_to_copy" and self.layers and isinstance(out, torch.Tensor) and args:
            # autocast's copy of a weight: the convolution it feeds is still that weight's layer's
            layer = self.layers.get(args[0].untyped_storage()) if isinstance(args[0], torch.Tensor) else None
            if layer is not None:
                self.layers[out.untyped_storage()] = layer
        return out

    def _reached(self, tensor: torch.Tensor) -> None:
        """A real leaf that learns, first reached by the run: its gradient as it was (autograd
        would give it a fake one)."""
        if tensor.is_leaf and id(tensor) not in self.reached:
            self.reached[id(tensor)] = (tensor, tensor.grad)

    def _kernel_buffer(self, op: str, family: str, out: Any, args: Any) -> None:
        """A block the kernel holds inside the call beyond its outputs: made and freed at once."""
        storages = {
            id(s): s.nbytes() for s in (t.untyped_storage() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        }
        layer = next(
            (
                self.layers[a.untyped_storage()]
                for a in args
                if isinstance(a, torch.Tensor) and a.untyped_storage() in self.layers
            ),
            (),
        )
        extra = extra_bytes(self.workspaces, family, list(storages.values()), layer)
        if extra:
            self.order += 1
            row = self.log.add(extra, float(self.order), float(self.order), category="temporary", op=op)
            self.order += 1
            self.log.t_free[row] = self.log.seq_free[row] = float(self.order)
            self.peak = max(self.peak, self.live + extra)

    def close(self) -> AllocationLog:
        """The log, with what is still alive marked so (ALIVE is the default)."""
        assert all(f == ALIVE or f > 0 for f in self.log.seq_free)
        self._closed = True
        return self.log


_READ_VALUE = torch.ops.aten._local_scalar_dense.default
#: Per op overload: its row's op name, whether it writes into an argument, its kernel family
#: (whatif/workspaces.py), looked up once: a step calls a few dozen overloads thousands of times.
_OP_INFO: dict[Any, tuple[str, bool, str | None]] = {}


def _op_info(func: Any) -> tuple[str, bool, str | None]:
    info = _OP_INFO.get(func)
    if info is None:
        op = f"aten::{getattr(func, '__name__', str(func)).split('.')[0]}"
        info = _OP_INFO[func] = (op, func._schema.is_mutable, family_of(op))
    return info


def _real(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor) and value.device.type != "meta"
