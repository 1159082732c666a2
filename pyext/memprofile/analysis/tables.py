"""Per-op and per-layer tables, from what the collectors recorded."""

from __future__ import annotations

from dataclasses import replace

from memprofile.analysis.replay import Replay
from memprofile.capture.base import ModuleRecord, OpRecord
from memprofile.model.profile import LayerStat, OpStat, OptimizerStat, Peak, root_of

#: The op table keeps the ops that allocated the most; the rest are summed in a note.
MAX_OPS = 500


def op_table(records: list[OpRecord]) -> list[OpStat]:
    rows = [
        OpStat(
            name=r.name,
            device=r.device,
            calls=r.calls,
            allocated_bytes=r.allocated_bytes,
            self_allocated_bytes=r.self_allocated_bytes,
            freed_bytes=r.freed_bytes,
            net_bytes=r.allocated_bytes - r.freed_bytes,
            max_alloc_bytes=r.max_alloc_bytes,
            input_shapes=list(r.input_shapes),
        )
        for r in records
        if r.allocated_bytes or r.freed_bytes
    ]
    rows.sort(key=lambda o: (-o.allocated_bytes, -o.freed_bytes, o.name))
    return rows[:MAX_OPS]


def layer_table(modules: list[ModuleRecord], replays: list[Replay], peak: Peak | None) -> list[LayerStat]:
    """One row per layer: what it owns (parameters, their gradients and optimizer
    state) and what it allocated (activations, temporaries; forward, backward).

    Figures are the layer's own: a parent's exclude its children's, so a tree
    view sums them and a ranking compares like with like. Only the trees that
    worked during the run are listed: a notebook keeps many models in its
    namespace, and one the cell never touched is noise in this cell's report.
    """
    layers: dict[str, LayerStat] = {}
    for m in _working_trees(modules, replays):
        layers[m.name] = LayerStat(
            name=m.name,
            type=m.type,
            parent=m.parent,
            parameter_bytes=m.parameter_bytes,
            gradient_bytes=m.gradient_bytes,
            optimizer_state_bytes=m.optimizer_state_bytes,
            output_bytes=m.output_bytes,
            library=m.library,
        )
    for rp in replays:
        log = rp.log
        for i, layer in enumerate(log.layer):
            if not layer or log.pre_existing[i]:
                continue
            row = layers.get(layer)
            if row is None:
                row = layers[layer] = LayerStat(name=layer, type="?", parent=None)
            size = log.size[i]
            category = log.category[i]
            if category == "activation":
                row.activation_bytes += size
            elif category == "temporary":
                row.temporary_bytes += size
            if log.phase[i] == "backward":
                row.backward_bytes += size
            else:
                row.forward_bytes += size
    if peak is not None:
        for name, size in peak.by_layer.items():
            if name in layers:
                layers[name].peak_bytes = size
    return list(layers.values())


def _working_trees(modules: list[ModuleRecord], replays: list[Replay]) -> list[ModuleRecord]:
    """The records whose root module has a module that ran or allocated in the run."""
    parents = {m.name: m.parent for m in modules}
    worked = {m.name for m in modules if m.ran}
    for rp in replays:
        log = rp.log
        worked.update(layer for layer, before in zip(log.layer, log.pre_existing) if layer and not before)
    roots = {root_of(name, parents) for name in worked}
    return [m for m in modules if root_of(m.name, parents) in roots]


def optimizer_table(records: list[OptimizerStat], layers: list[LayerStat]) -> list[OptimizerStat]:
    """The optimizers the collectors saw, stepped ones first; each names the
    root layers (models) its parameters belong to."""
    parents = {layer.name: layer.parent for layer in layers}
    out = []
    for r in records:
        out.append(replace(r, models=sorted({root_of(m, parents) for m in r.models})))
    return sorted(out, key=lambda o: (not o.stepped, -o.state_bytes))
