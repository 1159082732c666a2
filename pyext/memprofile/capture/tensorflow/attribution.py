"""Where each TensorFlow allocation belongs: its layer and phase (from the op's
name scopes, the eager layer scope around it, its thread) and its kind.

Keras sets name scopes inside `model.fit`/`tf.function`: "mlp_1/dense_1/MatMul"
(forward), "gradient_tape/mlp_1/dense_1/MatMul/MatMul_1" (backward),
"adam/..." (the optimizer, named after it), "compile_loss/..." (the loss).
Variables and slots are known by buffer address (keras_model.py) at
the start and end of the run; TF replaces a variable's buffer when it writes
one that is still being read, and those copies are followed here.
"""

from __future__ import annotations

import bisect
import re

from memprofile.capture.base import ALIVE, AllocationLog, ModuleRecord
from memprofile.capture.tensorflow.datasets import PREFIX as TF_DATA
from memprofile.capture.tensorflow.datasets import BufferNames
from memprofile.capture.tensorflow.keras_model import UNIQUIFIED, KerasWorld, ScopeResolver, shape_text
from memprofile.capture.tensorflow.xspace import ITERATOR

OPTIMIZER, LOSS, INPUT_PIPELINE = "(optimizer)", "(loss)", "(input pipeline)"
#: The profiler scopes memprofile opens around eager calls (after SCOPE_PREFIX):
#: "layer/<id(layer)>/<name>" and "backward".
SCOPE_PREFIX = "memprofile."
LAYER_SCOPE, BACKWARD_SCOPE = "layer/", "backward"
#: Ops that write a variable; when the variable's buffer is shared TF copies it first.
_VARIABLE_WRITES = re.compile(r"^(Assign(Add|Sub)?VariableOp|Resource(Sparse)?Apply|ResourceScatter)")
_INPUT_OPS = re.compile(r"(Dataset|Iterator|GetNext|OptionalGetValue|OptionalFromValue)")
_WRAPPERS = ("StatefulPartitionedCall", "PartitionedCall")
_BACKWARD_SCOPES = ("gradient_tape", "gradients")
#: Variables freed within this much of each other are assigned together (_follow_assignments).
ASSIGN_WINDOW_S = 0.01
_LOSS_SCOPES = ("compile_loss", "loss")


class Side:
    """Per-row facts only categorising needs, one entry per log row."""

    def __init__(self) -> None:
        self.region: list[str] = []
        self.node: list[str] = []

    def add(self, region: str = "", node: str = "") -> None:
        self.region.append(region)
        self.node.append(node)


def scope_components(node: str) -> list[str]:
    """An op's node name without the function-call wrappers TF puts around it."""
    comps = node.split("/") if node else []
    while comps and comps[0] in _WRAPPERS:
        comps = comps[1:]
    return comps


def place_allocation(
    node: str,
    scope: str,
    thread: str,
    world: KerasWorld,
    scopes: ScopeResolver,
    op_types: dict[str, str],
    buffers: BufferNames | None = None,
) -> tuple[str, str, str]:
    """(op name to show, layer, phase) of an allocation from its op's node
    name, the eager layer or tf.data iterator scope around it, and its thread."""
    comps = scope_components(node)
    op = "/".join(comps)
    if buffers is not None and scope.startswith(ITERATOR):  # made by a tf.data stage: the buffer that keeps it
        return op, buffers.name(scope), "other"
    if thread.startswith("tf_data") or (comps and _INPUT_OPS.search(op_types.get(node, comps[-1]))):
        return op, INPUT_PIPELINE, "other"
    if scope == BACKWARD_SCOPE:  # an eager GradientTape.gradient
        return op, "", "backward"
    if scope.startswith(LAYER_SCOPE):  # an eager layer call
        ident, _, name = scope[len(LAYER_SCOPE) :].partition("/")
        layer = world.by_id.get(int(ident), name) if ident.isdigit() else name
        return op, layer, "forward"
    backward = any(c in _BACKWARD_SCOPES for c in comps)
    names = {UNIQUIFIED.sub("", c) for c in comps[:-1]}
    # Both sides without TF's uniquifying suffix: a notebook's second Adam is
    # "adam_1", and its ops' scope is uniquified on its own.
    if {UNIQUIFIED.sub("", n) for n in world.optimizer_names} & names:
        return op, OPTIMIZER, "optimizer"
    layer = scopes.resolve(comps[:-1]) if len(comps) > 1 else ""
    if layer:
        return op, layer, "backward" if backward else "forward"
    if names & set(_LOSS_SCOPES):
        return op, LOSS, "backward" if backward else "forward"
    return op, "", "backward" if backward else "other"


def categorise(
    log: AllocationLog,
    side: Side,
    world: KerasWorld,
    live: dict,
    allocator: str,
    gradient_rows: dict[int, str] | None = None,
) -> None:
    """Each row's kind (and layer where its kind names one). `gradient_rows`:
    rows an eager tape returned as a variable's gradient -> that variable's layer."""
    n = len(log)
    # row -> (category, layer) of the variables and slots among the rows
    known: dict[int, tuple[str, str]] = {}
    end_buffers = {b.addr: b for b in world.buffers}
    for i in range(n):
        if log.pre_existing[i]:
            known[i] = (log.category[i], log.layer[i])
    for (a, addr), row in live.items():  # alive at the end: known by address
        b = end_buffers.get(addr) if a == allocator else None
        if b is not None:
            known[row] = (b.category, b.layer)
            if log.shape[row] is None:
                log.shape[row], log.dtype[row] = b.shape, b.dtype
    _follow_assignments(log, side, known, _follow_variable_copies(log, side, known))
    for row, path in (gradient_rows or {}).items():
        known.setdefault(row, ("gradient", path))
    trainable = {path: info.trainable_shapes for path, info in world.layers.items()}
    # An eager backward names no layer: a gradient is then known by a shape
    # that only one layer's variables have (else it stays without a layer),
    # among the layers an eager tape differentiated in the run when it did:
    # another model of the namespace is not being trained.
    taped = {world.var_paths.get(vid) for _, vid, _ in world.gradients} - {None}
    owners: dict[str, list[str]] = {}
    for path, shapes in trainable.items():
        if taped and path not in taped:
            continue
        for text in shapes:
            owners.setdefault(text, []).append(path)
    backward_times = sorted(log.t_alloc[i] for i in range(n) if log.phase[i] == "backward")
    for i in range(n):
        if i in known:
            # A variable belongs to its layer, whichever scope (the optimizer's) wrote it.
            log.category[i] = known[i][0]
            log.layer[i] = known[i][1] or log.layer[i]
            continue
        if log.pre_existing[i]:
            continue
        layer, phase = log.layer[i], log.phase[i]
        shape = log.shape[i]
        if layer == INPUT_PIPELINE or layer.startswith(TF_DATA):
            log.category[i] = "input"
        elif (
            phase == "backward"
            and shape is not None
            and _floating(log.dtype[i])  # not a shape computation's int32 [1] (BroadcastGradientArgs)
            and (text := shape_text(shape))
            and (text in trainable.get(layer, ()) or (not layer and text in owners))
        ):
            log.category[i] = "gradient"
            if not layer and len(owners[text]) == 1:
                log.layer[i] = owners[text][0]
        elif not log.op[i] and log.requested[i] in world.input_sizes:
            # TF's copy of a NumPy array (fit's of its x and y, from_tensor_slices'): made by no op.
            log.category[i] = "input"
            log.layer[i] = layer or INPUT_PIPELINE
        elif side.region[i] == "temp":
            log.category[i] = "temporary"
        elif phase == "forward" and _freed_after_backward(log.t_alloc[i], log.t_free[i], backward_times):
            log.category[i] = "activation"  # kept by forward for the gradient, freed by backward
        elif log.t_free[i] != ALIVE:
            log.category[i] = "temporary"
        else:
            log.category[i] = "other"
    for i in range(n, len(log)):  # rows split off a variable's buffer (_hand_over, _follow_assignments)
        if i in known:
            log.category[i] = known[i][0]
            log.layer[i] = known[i][1] or log.layer[i]


def _floating(dtype: str) -> bool:
    """Whether a block's dtype can be a gradient's (unknown: it may)."""
    return not dtype or "float" in dtype or dtype.startswith("complex")


def _freed_after_backward(t_alloc: float, t_free: float, backward_times: list[float]) -> bool:
    k = bisect.bisect_right(backward_times, t_alloc)
    return k < len(backward_times) and backward_times[k] < t_free


def _follow_variable_copies(log: AllocationLog, side: Side, known: dict[int, tuple[str, str]]) -> set[int]:
    """A variable written while its buffer is shared gets a new buffer, made by
    the writing op (AssignSubVariableOp, ResourceApplyAdam, ...). Such a buffer
    takes the kind of the known buffer of the same size it replaced (alive
    when it was made, freed first after), and forward in time; and a known
    buffer made by such an op gives its kind to the one it replaced."""
    writes = [
        i
        for i in range(len(log))
        if not log.pre_existing[i] and _VARIABLE_WRITES.match(UNIQUIFIED.sub("", side.node[i].rsplit("/", 1)[-1]))
    ]
    if not writes:
        return set()
    # Candidates for a variable's earlier buffer: other copies, its initial
    # value ("<variable>/Initializer/..."), and buffers from before the run
    # (not the op outputs a write consumed, which are freed as fast).
    write_set = set(writes)
    by_size: dict[int, list[int]] = {}
    for i in range(len(log)):
        if i in write_set or log.pre_existing[i] or i in known or "/Initializer/" in side.node[i]:
            by_size.setdefault(log.size[i], []).append(i)
    taken: set[int] = set()

    def predecessor(r: int, want_known: bool) -> int | None:
        t = log.t_alloc[r]
        best = None
        for p in by_size.get(log.size[r], ()):
            if p == r or p in taken or (p in known) != want_known:
                continue
            # The replaced buffer is freed once the copy is in place.
            if (log.pre_existing[p] or log.t_alloc[p] < t) and t <= log.t_free[p] != ALIVE:
                if best is None or log.t_free[p] < log.t_free[best]:
                    best = p
        return best

    replaced: list[tuple[int, int]] = []  # (old buffer, the copy that took its place)
    for r in sorted(writes, key=log.t_alloc.__getitem__):  # forward: from known old buffers
        if r in known:
            continue
        p = predecessor(r, True)
        if p is not None:
            known[r] = known[p]
            taken.add(p)
            replaced.append((p, r))
    for r in sorted(writes, key=log.t_alloc.__getitem__, reverse=True):  # backward: from known new buffers
        if r not in known:
            continue
        p = predecessor(r, False)
        if p is not None:
            known[p] = known[r]
            taken.add(p)
            replaced.append((p, r))
    linked = {r for _, r in replaced}
    for r in writes:  # a copy known at the end whose old buffer was known too (from before the run)
        if r in linked or r not in known:
            continue
        t = log.t_alloc[r]
        olds = [
            p
            for p in by_size.get(log.size[r], ())
            if p != r
            and p not in taken
            and known.get(p) == known[r]
            and (log.pre_existing[p] or log.t_alloc[p] < t)
            and t < log.t_free[p] != ALIVE
        ]
        if olds:
            p = min(olds, key=log.t_free.__getitem__)
            taken.add(p)
            replaced.append((p, r))
    for p, r in replaced:
        _hand_over(log, side, p, r)
    return {p for p, _ in replaced}


def _follow_assignments(log: AllocationLog, side: Side, known: dict[int, tuple[str, str]], handed: set[int]) -> None:
    """A variable assigned a computed value (BatchNormalization's moving mean
    and variance: `assign(new)`) takes that value's buffer, made by no write
    op: when a variable's buffer is freed in the run and no copy took its
    place, its new buffer is the last block of its size and layer made
    before then and still alive. That block is the variable's from then on
    (its row split there), and is followed in turn."""
    by_key: dict[tuple[int, str], list[int]] = {}  # (size, layer) -> rows made in the run, not known
    for i in range(len(log)):
        if not log.pre_existing[i] and i not in known:
            by_key.setdefault((log.size[i], log.layer[i]), []).append(i)
    todo = [p for p in known if known[p][0] in ("parameter", "optimizer_state") and p not in handed]
    taken: set[int] = set()
    while todo:
        todo.sort(key=lambda r: -log.t_free[r] if log.t_free[r] != ALIVE else -float("inf"))
        p = todo.pop()  # the earliest freed first
        t = log.t_free[p]
        if t == ALIVE:
            continue
        layer = known[p][1]
        found = sorted(
            (q for q in by_key.get((log.size[p], layer), ()) if q not in taken and log.t_alloc[q] <= t < log.t_free[q]),
            key=log.t_alloc.__getitem__,
        )
        if not found:
            continue
        # Variables of one size and layer assigned together (a moving mean, then its
        # variance) take the values computed in that order: the k-th freed, the k-th newest but.
        k = sum(
            1
            for r in todo
            if known[r][1] == layer and log.size[r] == log.size[p] and t < log.t_free[r] <= t + ASSIGN_WINDOW_S
        )
        best = found[max(len(found) - 1 - k, 0)]
        taken.add(best)
        row = _split(log, side, best, t, log.seq_free[p])
        known[row] = known[p]
        todo.append(row)


def _split(log: AllocationLog, side: Side, q: int, t: float, seq: float) -> int:
    """Row q ends at `t`, and a new row (returned) is the same block from then to q's free."""
    row = log.add(
        log.size[q],
        t,
        seq + 0.5,
        layer=log.layer[q],
        op=log.op[q],
        phase="other",
        shape=log.shape[q],
        dtype=log.dtype[q],
        requested=log.requested[q],
    )
    side.add("", side.node[q])
    log.t_free[row], log.seq_free[row] = log.t_free[q], log.seq_free[q]
    log.t_free[q], log.seq_free[q] = t, seq + 0.25
    return row


def _hand_over(log: AllocationLog, side: Side, old: int, copy: int) -> None:
    """From the copy's making on, the variable is the copy: the old buffer is
    the variable's until then, and from then to its free a value that a
    reader still holds (a temporary, its own row). Without the split a
    variable counted twice at a peak between the two (a 36,864 B kernel: 188,008
    B of parameters at one fit's peak, 151,144 at the next, for 152,296)."""
    t, seq = log.t_alloc[copy], log.seq_alloc[copy]
    if log.t_free[old] == ALIVE or log.t_free[old] <= t:
        return
    row = log.add(
        log.size[old],
        t,
        seq - 0.25,
        category="temporary",
        layer=log.layer[old],
        op=log.op[copy],
        phase="other",
        shape=log.shape[old],
        dtype=log.dtype[old],
        requested=log.requested[old],
    )
    side.add("temp", side.node[copy])
    log.t_free[row], log.seq_free[row] = log.t_free[old], log.seq_free[old]
    log.t_free[old], log.seq_free[old] = t, seq - 0.5


def merge_worlds(world: KerasWorld, older: KerasWorld) -> None:
    """Layers and names seen at the start but gone at the end still name their allocations."""
    for path, info in older.layers.items():
        world.layers.setdefault(path, info)
    for layer_id, layer_path in older.by_id.items():
        world.by_id.setdefault(layer_id, layer_path)
    for chain, chain_path in older.chains.items():
        world.chains.setdefault(chain, chain_path)
    world.root_names |= older.root_names
    world.optimizer_names |= older.optimizer_names
    world.pipelines.merge(older.pipelines)
    world.history = world.history or older.history
    world.input_sizes |= older.input_sizes
    for vid, path in older.var_paths.items():
        world.var_paths.setdefault(vid, path)


def module_records(world: KerasWorld, logs: dict[str, AllocationLog]) -> list[ModuleRecord]:
    computed: set[str] = set()  # layers with gradients made in the run
    worked: set[str] = set()  # layers with anything allocated in the run
    used: set[str] = set()  # layers any block belongs to, from before the run too
    for log in logs.values():
        for layer, category, before in zip(log.layer, log.category, log.pre_existing):
            used.add(layer)
            if not before:
                worked.add(layer)
            if category == "gradient":
                computed.add(layer)
    records = [
        ModuleRecord(
            name=info.path,
            type=info.type,
            parent=info.parent,
            parameter_bytes=info.parameter_bytes,
            gradient_bytes=info.trainable_bytes if info.path in computed else 0,
            optimizer_state_bytes=info.optimizer_state_bytes,
            ran=info.path in worked or info.path in computed,
        )
        for info in world.layers.values()
    ]
    for name, kind in ((OPTIMIZER, "Optimizer"), (LOSS, "Loss"), (INPUT_PIPELINE, "InputPipeline")):
        if name in used:
            records.append(ModuleRecord(name=name, type=kind, parent=None, ran=name in worked))
    for name in sorted(n for n in used if n.startswith(TF_DATA)):  # a tf.data buffer, by its line
        records.append(ModuleRecord(name=name, type="InputPipeline", parent=None, ran=True))  # it holds memory
    return records
