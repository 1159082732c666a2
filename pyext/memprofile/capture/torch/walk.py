"""torch's event tree walked once into allocation logs (capture/torch/ledger.py) and op records.

The tree comes from `kineto_results.experimental_event_tree()` (compat.event_tree); memprofile's
layer scopes (LAYER_PREFIX, opened by the module hooks) name each allocation's layer, and a
backward op inherits the layer of the forward op with the same autograd sequence number.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from memprofile.capture.base import AllocationLog, OpRecord
from memprofile.capture.torch import compat
from memprofile.capture.torch.ledger import DDP_BUCKET_SCOPES, MemoryLedger, Side, charge_alloc

LAYER_PREFIX = "memprofile.layer/"
NOGRAD_LAYER_PREFIX = "memprofile.layer.nograd/"
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "
OPTIMIZER_PREFIXES = ("Optimizer.step#", "Optimizer.zero_grad#")
_MAX_SHAPES_PER_OP = 3
_SHAPE_SAMPLE_CALLS = 3  # distinct input shapes are looked for in an op's first calls only


@dataclass
class Walked:
    """What the walk made of the events."""

    logs: dict[str, AllocationLog]
    ops: dict[str, OpRecord]
    #: The op that failed (the allocator's OutOfMemory) or else the last op, and its layer.
    last_op: dict[str, str]
    side: dict[str, Side]  # the ledger's columns that the logs do not keep (block addresses)
    cuda_before: dict[str, int]  # bytes CUDA's allocator held before the first event, by device


def walk_all(roots: list, torch: Any, *, record_shapes: bool, with_stack: bool, wall0: int, offset: float) -> Walked:
    """walk(), with the cyclic GC off: the walk makes a Python object per
    event and keeps them all, and the GC, triggered by those allocations,
    would traverse them again and again (~15 % of the walk). Nothing it makes
    is cyclic."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return walk(roots, torch, record_shapes=record_shapes, with_stack=with_stack, wall0=wall0, offset=offset)
    finally:
        if collecting:
            gc.enable()


def walk(roots: list, torch: Any, *, record_shapes: bool, with_stack: bool, wall0: int, offset: float) -> Walked:
    """One pass over the event tree. Hot: it visits every op of the run
    (~3.3 µs a node, ~2.5 of them in torch's own accessors, each a C++
    call), so it reads as few node properties as it can, walks children
    by iterator instead of pushing a (node, context) pair for each, and
    keeps a memory event as one tuple: the columns are built once at the
    end. `wall0`, `offset`: event times (unix ns) to seconds since the run's
    origin are (t - wall0) / 1e9 + offset."""
    TORCHOP = compat.event_type_torch_op()
    # only the Python tracer adds nodes that are neither
    check_tag = with_stack and TORCHOP is not None
    ledger = MemoryLedger()
    alloc, free = ledger.alloc, ledger.free
    ops: dict[str, OpRecord] = {}
    seq_layer: dict[int, str] = {}
    last: tuple[str, str] | None = None  # the last op in time order (DFS order, per thread)
    oom: tuple[str, str] | None = None
    device_names: dict[Any, str] = {}
    accelerator = getattr(torch, "accelerator", None)
    only_cpu = not torch.cuda.is_available() and not (accelerator and accelerator.is_available())

    # Context: (layer, phase, grad enabled, chain of op names outermost
    # first, the chain's distinct OpRecords)
    frames: list[tuple[Any, tuple]] = [
        (iter(sorted(roots, key=lambda e: e.start_time_ns)), ("", "other", True, (), ()))
    ]
    while frames:
        nodes, ctx = frames[-1]
        for node in nodes:
            name = node.name
            if name == "[memory]":
                f = node.extra_fields
                size = f.alloc_size
                if only_cpu:  # no accelerator: every block is the CPU's (and reading it is a C++ call)
                    device = "cpu"
                else:
                    try:
                        device = device_names[f.device]
                    except KeyError:
                        device = device_names[f.device] = str(f.device)
                t = (node.start_time_ns - wall0) / 1e9 + offset  # the collector's _t, inlined
                chain = ctx[3]
                if size > 0:
                    alloc(
                        device,
                        size,
                        f.allocation_id,
                        t,
                        ctx[0],
                        chain[0] if chain else "",
                        ctx[1],
                        ctx[2],
                        f.ptr,
                        f.total_allocated if device.startswith("cuda") else -1,
                    )
                    if chain:
                        charge_alloc(ops, chain, ctx[4], device, size)
                elif size < 0:
                    free(
                        device,
                        size,
                        f.allocation_id,
                        t,
                        ctx[1] == "backward",
                        f.ptr,
                        f.total_allocated if device.startswith("cuda") else -1,
                    )
                    if chain:
                        ops[chain[0]].freed_bytes -= size
                continue
            if name == "[OutOfMemory]":  # the allocator refused a block, here
                oom = (ctx[3][0] if ctx[3] else "", ctx[0])
                continue
            children = node.children
            if check_tag and node.tag != TORCHOP:
                if children:
                    frames.append((iter(children), ctx))
                    break
                continue
            layer, phase, grad, chain, recs = ctx
            child_ctx = ctx
            if name.startswith("memprofile.layer"):
                if name.startswith(LAYER_PREFIX):
                    layer, grad = name[len(LAYER_PREFIX) :], True
                else:
                    layer, grad = name[len(NOGRAD_LAYER_PREFIX) :], False
                child_ctx = (layer, "backward" if phase == "backward" else "forward", grad, chain, recs)
            elif name.startswith(BACKWARD_PREFIX):
                op = name[len(BACKWARD_PREFIX) :]
                rec = ops.get(op)
                if rec is None:
                    rec = ops[op] = OpRecord(op, "cpu")
                rec.calls += 1
                child_ctx = (seq_layer.get(node.extra_fields.sequence_number, ""), "backward", False, (op,), (rec,))
            elif name.startswith(OPTIMIZER_PREFIXES):
                child_ctx = ("", "optimizer", False, (), ())
            elif chain and chain[-1] == name:
                # The autograd node inside its evaluate_function: counted
                # there; its inputs are the shapes worth showing.
                if record_shapes:
                    _sample_shapes(ops[name], node)
            else:
                rec = ops.get(name)
                if rec is None:
                    rec = ops[name] = OpRecord(name, "cpu")
                rec.calls += 1
                if layer and phase == "forward":
                    seq = node.extra_fields.sequence_number
                    if seq >= 0:
                        seq_layer[seq] = layer
                if record_shapes:
                    _sample_shapes(rec, node)
                    if name in DDP_BUCKET_SCOPES:  # its input is a view of the bucket it writes to
                        for value in node.extra_fields.inputs:
                            ledger.bucket(getattr(value, "allocation_id", None))
                    elif not chain and phase != "backward" and name not in _VIEW_OPS:
                        # An outermost forward op's inputs name the shape and
                        # dtype of blocks allocated earlier (memory events carry
                        # none). Backward and view ops are skipped: reading
                        # inputs is a C++ call per op, and they only see
                        # tensors the forward ops saw already.
                        for value in node.extra_fields.inputs:
                            key = getattr(value, "allocation_id", None)
                            if key in ledger.where:
                                ledger.shape(key, list(value.sizes), str(value.dtype).replace("torch.", ""))
                last = (name, layer)
                if children:
                    child_ctx = (layer, phase, grad, chain + (name,), recs if name in chain else recs + (rec,))
            if children:
                frames.append((iter(children), child_ctx))
                break
        else:
            frames.pop()
    logs, side = ledger.logs()
    failed = oom or last
    return Walked(logs, ops, {"op": failed[0], "layer": failed[1]} if failed else {}, side, ledger.cuda_before)


#: Ops that make views or read metadata: their inputs were some other op's first.
_VIEW_OPS = frozenset(
    {
        "aten::view",
        "aten::t",
        "aten::transpose",
        "aten::as_strided",
        "aten::expand",
        "aten::reshape",
        "aten::detach",
        "aten::resolve_conj",
        "aten::resolve_neg",
        "aten::permute",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::select",
        "aten::slice",
        "aten::_unsafe_view",
        "aten::contiguous",
        "aten::alias",
        "aten::size",
        "aten::stride",
        "aten::is_nonzero",
        "aten::item",
        "aten::_local_scalar_dense",
        "detach",
        "aten::split",
        "aten::chunk",
        "aten::unbind",
        "aten::narrow",
        "aten::flatten",
        "aten::zero_",
        "aten::fill_",
    }
)


def _sample_shapes(rec: OpRecord, node: Any) -> None:
    """Keep a few distinct input shapes of an op, looked for in its first calls."""
    if rec.calls <= _SHAPE_SAMPLE_CALLS and len(rec.input_shapes) < _MAX_SHAPES_PER_OP:
        shapes = _input_shapes(node.extra_fields)
        if shapes and shapes not in rec.input_shapes:
            rec.input_shapes.append(shapes)


def _input_shapes(fields: Any) -> str:
    parts = []
    for value in fields.inputs:
        sizes = getattr(value, "sizes", None)
        if sizes is not None:
            parts.append("[" + ", ".join(str(s) for s in sizes) + "]")
    return ", ".join(parts)
