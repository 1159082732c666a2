"""What the run leaves of each module and optimizer: ModuleRecords and the optimizers' records
(capture/base.py OptimizerStat), read from the live objects at the run's end."""

from __future__ import annotations

import weakref
from typing import Any

from memprofile.capture.base import ModuleRecord, OptimizerStat
from memprofile.capture.namespace import walk_namespace
from memprofile.capture.torch.baseline import Baseline, own_bytes, storage_bytes
from memprofile.capture.torch.layers import LayerTree


def _state_bytes(optimizers: dict[int, weakref.ref], torch: Any) -> dict[int, int]:
    """id(parameter) -> the bytes of the optimizer state kept for it."""
    states: dict[int, int] = {}
    for ref in optimizers.values():
        opt = ref()
        if opt is None:
            continue
        for p, state in opt.state.items():
            states[id(p)] = states.get(id(p), 0) + sum(
                v.untyped_storage().nbytes() for v in state.values() if isinstance(v, torch.Tensor)
            )
    return states


def module_records(
    layers: LayerTree,
    ran: set[str],
    output_bytes: dict[int, int],
    stepped: set[int],
    optimizers: dict[int, weakref.ref],
    baseline: Baseline,
    torch: Any,
) -> list[ModuleRecord]:
    """Each module with what it owns now. `ran`: modules whose forward ran; `output_bytes`:
    id(module) -> what its last call returned; `stepped`: id() of parameters an optimizer stepped."""
    records = []
    states = _state_bytes(optimizers, torch)
    for name, ref in layers.modules.items():
        module = ref()
        record = ModuleRecord(
            name=name,
            type=layers.types.get(name, "?"),
            parent=layers.parents.get(name),
            ran=name in ran,
            output_bytes=output_bytes.get(id(module), 0) if module is not None else 0,
            library=type(module).__module__.split(".")[0] if module is not None else "",
        )
        if module is not None:
            seen: set[int] = set()
            for p in module.parameters(recurse=False):
                ptr = p.untyped_storage().data_ptr()
                if ptr in seen:
                    continue
                seen.add(ptr)
                record.parameter_bytes += p.untyped_storage().nbytes()
                record.ran |= id(p) in stepped
                if p.grad is not None:
                    record.gradient_bytes += own_bytes(p.grad)
                    # a gradient that did not exist at the start: backward reached it
                    record.ran |= p.grad.untyped_storage().data_ptr() not in baseline.storages
                record.optimizer_state_bytes += states.get(id(p), 0)
        records.append(record)
    return records


def optimizer_records(
    optimizers: dict[int, weakref.ref],
    names: dict[int, str],
    steps: dict[int, int],
    param_layer: dict[int, str],
    baseline: Baseline,
    namespace: dict[str, Any],
    torch: Any,
) -> list[OptimizerStat]:
    """Every optimizer the namespace held or the run stepped. `names`: id(optimizer) -> its path
    in the namespace (those made during the run are named here); `steps`: how many steps each took."""
    records: list[OptimizerStat] = []
    unnamed = {k for k in optimizers if k not in names}
    if unnamed:  # made during the run: the namespace names them now

        def take(variable: str, path: str, value: Any, via: str) -> bool:
            if id(value) in unnamed and via == "variable":
                names.setdefault(id(value), path)
            return isinstance(value, torch.optim.Optimizer | torch.Tensor | torch.nn.Module)

        walk_namespace(namespace, take)
    for key, ref in optimizers.items():
        opt = ref()
        if opt is None:
            continue
        params = {id(p): p for g in opt.param_groups for p in g["params"]}
        state = sum(storage_bytes(v) for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor))
        models = sorted({param_layer[i] for i in params if i in param_layer})
        records.append(
            OptimizerStat(
                name=names.get(key) or type(opt).__name__,
                type=type(opt).__name__,
                stepped=steps.get(key, 0) > 0,
                steps=steps.get(key, 0),
                parameter_bytes=sum(storage_bytes(p) for p in params.values()),
                state_bytes=state,
                state_created=state > baseline.opt_state_start.get(key, 0),
                models=models,
            )
        )
    return records
