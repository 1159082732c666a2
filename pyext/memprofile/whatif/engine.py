"""Run a cell's first steps on fake tensors and measure them (see __init__)."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import time
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from memprofile.capture.base import ALIVE, AllocationLog
from memprofile.whatif.call import Bindings, Gone

#: Training steps a fake run makes before it stops: the notebook ran the cell before, so its
#: optimizer state and gradients exist and the first step is a steady one.
STEPS = 1
#: Forward calls of the notebook's models a forward-only cell may make before it stops.
FORWARDS = 64


@dataclass
class StepSource:
    """What re-executes a profiled cell: its code and the names it runs in."""

    source: str
    namespace: Mapping[str, Any]
    #: Optimizer steps the real run made (0: forward only).
    steps: int = 0
    #: Kernels' own buffers per op family, learned from the measured run (whatif/workspaces.py).
    workspaces: dict[str, float] = field(default_factory=dict)
    #: Names over `namespace` for a run that is not a cell (whatif/call.py): a `@profiled`
    #: call's function and arguments, a block's locals; held weakly.
    bindings: Bindings | None = None


@dataclass
class FakeRun:
    peak_bytes: int = 0
    #: Bytes live before the run: the copies' parameters, gradients, optimizer state and data.
    start_bytes: int = 0
    log: AllocationLog | None = None
    steps: int = 0
    forwards: int = 0
    #: The first model input's batch and sequence length (dims 0 and 1).
    batch_size: int | None = None
    seq_len: int | None = None
    #: Why it could not run (then nothing else holds): "ScalarRead: ...".
    error: str | None = None
    seconds: float = 0.0
    #: Values the code read from fake tensors (`.item()`): each read 1.
    scalar_reads: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchLine:
    """Fake runs at other batches without running: where three runs of one cell at three batches
    made the same rows in the same order and each row's size is affine in the batch through all
    three (a row's bytes are its shape's product: the batch times the rest), a run at any batch
    has those rows at sizes on their lines. `at` is None where a size would not be a whole
    number of bytes; any other disagreement and `batch_line` gives no line."""

    template: FakeRun
    batch: int
    #: Per row: bytes per one more sample.
    slopes: list[Fraction]

    def at(self, batch: int) -> FakeRun | None:
        assert self.template.log is not None
        sizes = [s + d * (batch - self.batch) for s, d in zip(self.template.log.size, self.slopes)]
        if any(s.denominator != 1 or s < 0 for s in sizes):
            return None
        whole = [int(s) for s in sizes]
        log = dataclasses.replace(self.template.log, size=whole, requested=list(whole), shape=[None] * len(whole))
        return FakeRun(peak_bytes=_replayed_peak(log), log=log, batch_size=batch, seq_len=self.template.seq_len)


def batch_line(runs: list[FakeRun]) -> BatchLine | None:
    """The line through fake runs of one cell at one sequence length and three or more batches
    (see BatchLine), or None where they differ in anything but their rows' sizes on it."""
    made = {r.batch_size: (r, r.log) for r in runs if r.ok and r.log is not None and r.batch_size}
    if len(made) < 3:
        return None
    (b0, (r0, log0)), (b1, (_, log1)), *_ = sorted(made.items())
    if not all(_same_rows(log0, log) for _, log in made.values()):
        return None
    line = BatchLine(r0, b0, [Fraction(s1 - s0, b1 - b0) for s0, s1 in zip(log0.size, log1.size)])
    for b, (run, log) in made.items():  # the two it is drawn through too: their peaks are checked
        on_line = line.at(b)
        if on_line is None or on_line.log is None or on_line.log.size != log.size:
            return None
        if on_line.peak_bytes != run.peak_bytes:  # the ledger's peak is its log's
            return None
    return line


def _same_rows(a: AllocationLog, b: AllocationLog) -> bool:
    return all(
        getattr(a, name) == getattr(b, name)
        for name in ("t_alloc", "t_free", "seq_alloc", "seq_free", "pre_existing", "op", "category", "dtype")
    ) and len(a.size) == len(b.size)


def _replayed_peak(log: AllocationLog) -> int:
    """The live bytes' high-water mark over a fake run's log: its rows from before the run,
    then its allocations and frees in the order the ledger made them."""
    live = sum(size for size, pre in zip(log.size, log.pre_existing) if pre)
    events = sorted(
        [(log.seq_alloc[i], log.size[i]) for i in range(len(log.size)) if not log.pre_existing[i]]
        + [(log.seq_free[i], -log.size[i]) for i in range(len(log.size)) if log.seq_free[i] != ALIVE]
    )
    peak = live
    for _, change in events:
        live += change
        peak = max(peak, live)
    return peak


class _Enough(BaseException):
    """Raised from a hook when the fake run has made its steps (a BaseException:
    the cell's own `except Exception` must not swallow it)."""


def cell_names(source: str) -> frozenset[str]:
    """Every name the code (and the functions it calls by name) reads."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))


def _read_first(source: str) -> frozenset[str]:
    """Names the code reads before it binds them (in source order): what it takes from the notebook."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    first: dict[str, bool] = {}
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name)), key=lambda n: (n.lineno, n.col_offset)):
        first.setdefault(node.id, isinstance(node.ctx, ast.Load))
    return frozenset(name for name, loaded in first.items() if loaded)


def _names_with_callees(
    source: str, namespace: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> frozenset[str]:
    """Names of the cell, and of the notebook functions it calls (their globals), transitively
    (`extra`: names bound over the namespace, see StepSource.bindings)."""
    import inspect
    import types

    seen: set[str] = set()
    todo = [source]
    while todo:
        names = cell_names(todo.pop()) - seen
        seen |= names
        for name in names:
            fn = extra[name] if extra and name in extra else namespace.get(name)
            if isinstance(fn, types.FunctionType) and fn.__globals__ is namespace:
                with contextlib.suppress(OSError, TypeError):
                    todo.append(_dedent(inspect.getsource(fn)))
                seen.update(fn.__code__.co_names)
    return frozenset(seen)


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def fake_run(
    step: StepSource,
    *,
    source: str | None = None,
    before: str = "",
    batch: float = 1.0,
    seq: float = 1.0,
    batch_size: int | None = None,
    seq_len: int | None = None,
    steps: int = STEPS,
    warm: bool = False,
) -> FakeRun:
    """Run `source` (default: the cell's) after `before` on fake copies of the
    cell's names, with data scaled by `batch` and `seq` (the real batch and
    sequence length: `batch_size`, `seq_len`, found by a first run at scale 1).
    `warm`: run the code once first and measure its second run, as a notebook that
    runs a changed cell again has by then what its first run made (a new optimizer's
    buffers, outputs in the changed dtype) instead of what the old cell left."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    from memprofile.whatif.ledger import FakeLedger
    from memprofile.whatif.shadow import Guard, Scale, Shadow, Unsupported

    code = step.source if source is None else source
    run = FakeRun()
    started = time.perf_counter()
    try:
        extra = step.bindings.resolve() if step.bindings is not None else {}
    except Gone as e:
        run.error = str(e)
        return run
    names = _names_with_callees(before + "\n" + code, step.namespace, extra)
    guard = Guard(ChainMap(extra, dict(step.namespace)) if extra else step.namespace, names)
    ledger = FakeLedger()
    ledger.workspaces = step.workspaces
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    scale = Scale(batch, seq, batch_size, seq_len)
    handles: list[Any] = []
    try:
        shadow = Shadow(step.namespace, mode, ledger, scale, names, read=_read_first(before + "\n" + code), extra=extra)
        ns = shadow.build()
        _forget_copies(shadow, mode)
        run.start_bytes = ledger.live
        limit = steps if step.steps else FORWARDS
        done = [0, 0]  # this pass's optimizer steps and model calls

        def on_step(*_: Any) -> None:
            run.steps += 1
            done[0] += 1
            if step.steps and done[0] >= limit:
                raise _Enough

        def on_forward(module: Any, args: Any, kwargs: Any) -> None:
            run.forwards += 1
            done[1] += 1
            first = _first_tensor(args, kwargs)
            if run.batch_size is None and first is not None and first.dim() >= 1:
                run.batch_size = int(first.shape[0])
                run.seq_len = _sequence_length(first)
            if not step.steps and done[1] > limit:
                raise _Enough

        # On the copies only (the user's models keep their hooks as they are); kwargs: HF models.
        handles.extend(m.register_forward_pre_hook(on_forward, with_kwargs=True) for m in shadow.models)
        handles.append(register_optimizer_step_post_hook(on_step))
        # a real optimizer the copy did not reach (a module's) stepped by the run: its state is put back
        # (not the copies, nor one the cell builds: its parameters are fake, and it must be free to die)
        watch = lambda opt, *_: guard.watch(opt) if _real_params(opt) else None  # noqa: E731
        handles.append(register_optimizer_step_pre_hook(watch))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            with mode, ledger:
                if before:
                    exec(compile(before, "<what-if: before>", "exec"), ns)
                for n in range(2 if warm else 1):
                    if n:  # the measured pass: its own peak, from what a profile of it would find
                        ledger.hide_unreachable(_reachable(ns))
                        ledger.peak, done[:] = ledger.live, [0, 0]
                        run.start_bytes = ledger.live
                    try:
                        exec(compile(code, "<what-if>", "exec"), ns)
                    except _Enough:
                        pass
        run.peak_bytes = ledger.peak
        run.scalar_reads = ledger.scalar_reads
        run.log = ledger.close()
    except Unsupported as e:
        run.error = str(e)
    except Exception as e:  # the cell on fake tensors: a data-dependent op, a custom kernel, ...
        run.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    finally:
        for h in handles:
            h.remove()
        guard.restore(ledger.reached.values())
        run.seconds = time.perf_counter() - started
    if run.scalar_reads:
        run.notes.append(f"the code read {run.scalar_reads} value(s) from tensors (`.item()`): each read 1")
    return run


def _real_params(opt: Any) -> bool:
    """An optimizer of real parameters (not a fake copy's)."""
    from torch._subclasses.fake_tensor import FakeTensor

    first = next((p for g in opt.param_groups for p in g["params"]), None)
    return first is not None and not isinstance(first, FakeTensor)


def _first_tensor(args: Any, kwargs: Any) -> Any:
    """The first tensor a model is called with: positional, keyword, or in a dict (a batch)."""
    import torch

    for value in (*args, *(kwargs or {}).values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, Mapping):
            hit = next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
            if hit is not None:
                return hit
    return None


def _forget_copies(shadow: Any, mode: Any) -> None:
    """Drop the copying's own references to the fakes: a fake the cell stops using
    (a model it rebinds) is then freed, as the real one is. The real tensors outlive
    the run, and torch's converter would keep their fakes alive with them."""
    shadow.memo.clear()
    meta = getattr(getattr(mode, "fake_tensor_converter", None), "meta_converter", None)
    for memo in (getattr(meta, "tensor_memo", None), getattr(meta, "storage_memo", None)):
        if memo is not None:
            memo.clear()


def _sequence_length(first: Any) -> int | None:
    """Dim 1 of a model's first input where it is a sequence: token ids (batch, length),
    or embeddings (batch, length, features); not an MLP's features nor an image's channels."""
    integer = not (first.dtype.is_floating_point or first.dtype.is_complex)
    if (integer and first.dim() == 2) or (not integer and first.dim() == 3):
        return int(first.shape[1])
    return None


def _reachable(ns: dict[str, Any]) -> Any:
    """The storages a profile's baseline finds in `ns`: its tensors, modules' parameters,
    buffers and gradients, optimizers' state (the profiler's own namespace walk)."""
    import torch
    from torch.utils.weak import WeakIdKeyDictionary

    from memprofile.capture.torch.baseline import namespace_objects

    modules, optimizers, tensors = namespace_objects(ns, torch, {})
    found = list(tensors)
    for _, module in modules:
        found += [*module.parameters(), *module.buffers()]
        found += [p.grad for p in module.parameters() if p.grad is not None]
    for opt in optimizers:
        found += [v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    reachable: Any = WeakIdKeyDictionary()
    for t in found:
        reachable[t.untyped_storage()] = True
    return reachable
