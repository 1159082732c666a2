"""The notebook's names as a fake run sees them, and what it must not change.

`Shadow.build` makes the globals a fake run executes in: models and
optimizers as fake copies (one memo, so an optimizer's parameters are its
model's), tensors as fake tensors, data scaled where a batch or sequence
length is asked for, containers shallow-copied (a `losses.append` stays in
the copy), the notebook's own functions rebound to the copy. Objects the
copy cannot reach (a model held in a closure) are still converted on the
fly, and `Guard` puts back what that could change: gradients, optimizer
state, random states.
"""

from __future__ import annotations

import builtins
import copy
import random
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensorMode

from memprofile.whatif.call import TensorSpec, plain_record, shown
from memprofile.whatif.ledger import FakeLedger

#: IPython's own names: history and caches the cell does not compute with.
_SKIP = frozenset({"In", "Out", "_oh", "_ih", "_dh", "exit", "quit", "get_ipython", "_", "__", "___"})
#: Integer names that hold a batch size (scaled with the batch).
_BATCH_NAMES = ("batch", "bs", "batch_size", "bsz", "per_device_batch")


class Unsupported(Exception):
    """The cell cannot be re-executed on fake tensors without a visible effect."""


@dataclass
class Scale:
    batch: float = 1.0
    seq: float = 1.0
    #: The real run's batch and sequence length (the first model input's dims 0 and 1).
    batch_size: int | None = None
    seq_len: int | None = None

    @property
    def identity(self) -> bool:
        return self.batch == 1.0 and self.seq == 1.0

    def shape(self, shape: list[int], integer: bool) -> list[int]:
        out = list(shape)
        if self.batch_size and out and out[0] == self.batch_size:
            out[0] = max(1, round(out[0] * self.batch))
        # Sequence dims: token ids (B, S), and (B, S, ...) activations held as data.
        if self.seq_len and len(out) >= 2 and out[1] == self.seq_len and (integer or len(out) >= 3):
            out[1] = max(1, round(out[1] * self.seq))
        return out


def _read_only_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    if any(c in mode for c in "wax+"):
        raise Unsupported(f"the cell writes a file ({file!r}): a fake run does not write it again")
    return builtins.open(file, mode, *args, **kwargs)


@dataclass
class Shadow:
    namespace: Mapping[str, Any]
    mode: FakeTensorMode
    ledger: FakeLedger
    scale: Scale = field(default_factory=Scale)
    #: Names the cell reads (its AST): only these are copied; the rest stay real and untouched.
    names: frozenset[str] = frozenset()
    #: Names the code reads before it binds them: an object of these the copy cannot make is refused.
    read: frozenset[str] = frozenset()
    memo: dict[int, Any] = field(default_factory=dict)
    models: list[nn.Module] = field(default_factory=list)
    #: Closure cells with copies in them, by the real cell (`_closure`).
    cells: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: Names over the namespace (a call's arguments, a block's locals: StepSource.bindings).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> dict[str, Any]:
        ns = {**self.namespace, **self.extra}
        items = [(k, v) for k, v in ns.items() if k in self.names and k not in _SKIP]
        # Models first: an optimizer copied after them finds their fake parameters in the memo.
        items.sort(key=lambda kv: 0 if isinstance(kv[1], nn.Module) else 1)
        for name, value in items:
            ns[name] = self.convert(name, value, depth=0)
        bi = dict(vars(builtins))
        bi["open"] = _read_only_open
        ns["__builtins__"] = bi
        for name, value in list(ns.items()):
            if isinstance(value, types.FunctionType) and value.__globals__ is self.namespace:
                ns[name] = _rebound(value, ns, self._closure(value))
        return ns

    def convert(self, name: str, value: Any, depth: int) -> Any:
        if isinstance(value, nn.Module | torch.optim.Optimizer) and id(value) in self.memo:
            return self.memo[id(value)]  # copied under another name (`net = model`, a closure's): one copy
        if isinstance(value, nn.Module):
            fake = self._deepcopy(value)
            self.models.append(fake)
            for real_p, fake_p in zip(value.parameters(), fake.parameters()):
                if real_p.grad is not None and fake_p.grad is None:  # deepcopy leaves gradients behind
                    with self.mode:
                        fake_p.grad = self.mode.from_tensor(real_p.grad)
            for path, p in fake.named_parameters():
                layer = path.rpartition(".")[0]
                self.ledger.layers[p.untyped_storage()] = (layer, f"{name}.{layer}") if layer else (name,)
            for p in fake.parameters():
                self.ledger.track(p, "parameter", before=True)
                if p.grad is not None:
                    self.ledger.track(p.grad, "gradient", before=True)
            for b in fake.buffers():
                self.ledger.track(b, "parameter", before=True)
            return fake
        if isinstance(value, torch.optim.Optimizer):
            fake_opt = self._deepcopy(value)
            _keep_default_foreach(value, fake_opt)
            for state in fake_opt.state.values():
                for v in state.values():
                    if isinstance(v, torch.Tensor) and v.dim() > 0:
                        self.ledger.track(v, "optimizer_state", before=True)
            return fake_opt
        if isinstance(value, torch.Tensor | TensorSpec):
            return self.tensor(value)
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.ndarray) and value.flags.writeable:
            view = value.view()  # the run reads the array; a write into it raises instead of landing
            view.flags.writeable = False
            return view
        if isinstance(value, types.GeneratorType) or (hasattr(value, "__next__") and not isinstance(value, str)):
            raise Unsupported(f"the cell reads the iterator {shown(name)}: running it again would consume it")
        if depth < 3 and type(value) in (list, tuple, dict, set):
            if isinstance(value, dict):
                return {k: self.convert(name, v, depth + 1) for k, v in value.items()}
            return type(value)(self.convert(name, v, depth + 1) for v in value)
        if depth < 3 and isinstance(value, Mapping) and hasattr(value, "data") and isinstance(value.data, dict):
            clone = copy.copy(value)  # transformers' BatchEncoding: a dict in .data
            clone.data = {k: self.convert(name, v, depth + 1) for k, v in value.data.items()}
            return clone
        if _is_data_loader(value):
            return self._loader(value)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.scale.batch_size
            and value == self.scale.batch_size
            and any(b in name.lower() for b in _BATCH_NAMES)
        ):
            return max(1, round(value * self.scale.batch))
        if depth < 3 and isinstance(value, dict):  # an output record (transformers' ModelOutput)
            try:
                record: Any = copy.copy(value)
                for k, v in value.items():
                    record[k] = self.convert(name, v, depth + 1)
                return record
            except Unsupported:
                raise
            except Exception as e:
                raise Unsupported(f"the cell uses {shown(name)}, which cannot be copied ({type(e).__name__})") from None
        if _unchanged_by_a_run(value):
            return value
        if isinstance(value, torch.optim.lr_scheduler.LRScheduler):  # its optimizer is in the memo: the copy's
            return self._deepcopy(value)
        if plain_record(value):
            return copy.deepcopy(value)  # a config of plain values (args.lr): a write lands in the copy
        if depth == 0 and name in self.read:
            # a Trainer, a tokenizer, the user's own object: running the cell again could change it
            kind = type(value).__name__
            raise Unsupported(f"the cell uses {shown(name)} (a {kind}): running it again could change it")
        return value

    def _closure(self, fn: types.FunctionType) -> tuple | None:
        """A notebook function's closure with the copies of what it closes over (a training step
        defined inside a function, over its model and optimizer): one new cell per cell, so
        functions that share a variable still share it."""
        if not fn.__closure__:
            return fn.__closure__
        cells = []
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__):
            key = ("cell", id(cell))
            if key not in self.cells:
                try:
                    contents = cell.cell_contents
                except ValueError:  # not bound yet
                    self.cells[key] = types.CellType()
                else:
                    self.cells[key] = types.CellType(self.convert(var, contents, depth=1))
            cells.append(self.cells[key])
        return tuple(cells)

    def tensor(self, value: torch.Tensor | TensorSpec) -> torch.Tensor:
        if isinstance(value, TensorSpec) and id(value) in self.memo:
            return self.memo[id(value)]  # one tensor passed twice (`f(x, x)`): one fake
        integer = not (value.dtype.is_floating_point or value.dtype.is_complex)
        shape = self.scale.shape(list(value.shape), integer)
        with self.mode:
            if isinstance(value, TensorSpec) and shape == list(value.shape):
                fake = torch.empty_strided(value.shape, value.stride, dtype=value.dtype, device=value.device)
                fake.requires_grad_(value.requires_grad)
            elif shape == list(value.shape):
                fake = self.mode.from_tensor(value)
            else:
                fake = torch.empty(shape, dtype=value.dtype, device=value.device, requires_grad=value.requires_grad)
        self.ledger.track(fake, "input", before=True)
        if isinstance(value, TensorSpec):
            self.memo[id(value)] = fake
        return fake

    def _deepcopy(self, value: Any) -> Any:
        with self.mode, FakeCopyMode(self.mode):
            return copy.deepcopy(value, self.memo)

    def _loader(self, loader: Any) -> Any:
        if self.scale.batch == 1.0 or not loader.batch_size:
            return loader
        from torch.utils.data import DataLoader, RandomSampler

        return DataLoader(
            loader.dataset,
            batch_size=max(1, round(loader.batch_size * self.scale.batch)),
            shuffle=isinstance(loader.sampler, RandomSampler),
            collate_fn=loader.collate_fn,
            drop_last=loader.drop_last,
        )


def _unchanged_by_a_run(value: Any) -> bool:
    """Values a re-run of the cell cannot change in place (or that it only reads)."""
    if value is None or isinstance(value, int | float | complex | str | bytes | type | types.ModuleType):
        return True
    if isinstance(value, types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return True
    if isinstance(value, torch.dtype | torch.device | torch.Size | torch.Generator):
        return True
    if type(value).__module__.startswith("torch.utils.data"):  # datasets, samplers: read
        return True
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray | np.generic):
        if isinstance(value, np.ndarray) and value.flags.writeable:
            return False  # handed over read-only (Shadow.convert)
        return True
    return False


def _is_data_loader(value: Any) -> bool:
    return type(value).__name__ == "DataLoader" and hasattr(value, "batch_size") and hasattr(value, "dataset")


def _rebound(fn: types.FunctionType, ns: dict[str, Any], closure: tuple | None) -> types.FunctionType:
    new = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    return new


def _keep_default_foreach(real: torch.optim.Optimizer, fake: torch.optim.Optimizer) -> None:
    """A fake tensor is not a "native" tensor, so torch would take the single-tensor
    path where the real run took foreach: fix the real run's choice in the copy."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach
    except ImportError:  # pragma: no cover - older torch
        return
    for real_group, group in zip(real.param_groups, fake.param_groups):
        if "foreach" in group and group["foreach"] is None and not group.get("fused"):
            params = [p for p in real_group["params"] if isinstance(p, torch.Tensor)]
            group["foreach"] = _default_to_fused_or_foreach(params, False, False)[1]


class Guard:
    """What a fake run could change in real objects, put back afterwards."""

    def __init__(self, namespace: Mapping[str, Any], names: frozenset[str]) -> None:
        self.grads: list[tuple[torch.Tensor, Any]] = []
        self.optimizers: list[tuple[torch.optim.Optimizer, dict, list]] = []
        self.modes: list[tuple[nn.Module, bool]] = []
        for name, value in namespace.items():
            if name in _SKIP:
                continue
            if isinstance(value, nn.Module):
                self.grads += [(p, p.grad) for p in value.parameters()]
                self.modes += [(m, m.training) for m in value.modules()]
            elif isinstance(value, torch.optim.Optimizer):
                state = {p: dict(s) for p, s in value.state.items()}
                self.optimizers.append((value, state, [dict(g) for g in value.param_groups]))
        self.torch_rng = torch.get_rng_state()
        self.py_rng = random.getstate()
        np = sys.modules.get("numpy")
        self.np_rng = np.random.get_state() if np is not None else None

    def watch(self, opt: torch.optim.Optimizer) -> None:
        """An optimizer the run steps that the copy did not reach (held in a closure): its state
        as it is now, put back after the run."""
        if all(opt is not o for o, _, _ in self.optimizers):
            state = {p: dict(s) for p, s in opt.state.items()}
            self.optimizers.append((opt, state, [dict(g) for g in opt.param_groups]))

    def restore(self, reached: Any = ()) -> None:
        """Put back what the run may have changed (`reached`: (leaf, its gradient before) of the
        real leaves the run's ops reached)."""
        for p, grad in [*self.grads, *reached]:
            p.grad = grad
        for m, training in self.modes:
            m.training = training
        for opt, state, groups in self.optimizers:
            opt.state.clear()
            opt.state.update(state)
            for group, saved in zip(opt.param_groups, groups):
                group.clear()
                group.update(saved)
        torch.set_rng_state(self.torch_rng)
        random.setstate(self.py_rng)
        np = sys.modules.get("numpy")
        if np is not None and self.np_rng is not None:
            np.random.set_state(self.np_rng)
