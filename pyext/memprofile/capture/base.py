"""What every collector gives: start(), stop() -> RawCapture, plain recorded data.

Capture never renders and never builds the Profile: analysis/build.py does that.
Collectors are looked up by name and imported lazily, so importing memprofile
imports no framework.
"""

from __future__ import annotations

import importlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Protocol

from memprofile.capture.kept import GrownContainer, KeptObject
from memprofile.capture.steps import StepRecord
from memprofile.capture.trainers import TrainerInfo

#: t_free / seq_free of an allocation still live when the run ended.
ALIVE = math.inf

#: The op (and line) of memory that existed before the cell or block began, in every
#: framework's tables: one label, so a notebook profiling torch and TF reads one name.
BEFORE_CELL = "(before the cell)"


#: A note for the profile: (code, message) or (code, message, fix): model.profile.Note.
RawNote = tuple[str, str] | tuple[str, str, str]

#: Training steps recorded in full detail unless told otherwise.
DETAIL_STEPS = 3


#: Readings of the two clocks taken to pair them (the tightest pair is kept).
CLOCK_PAIR_TRIES = 9


def wall_and_perf() -> tuple[int, float]:
    """time.time_ns() and the time.perf_counter() of the same instant: the
    wall clock read between two perf_counter readings, the closest such
    bracket of a few kept. The profilers' events come in wall-clock ns and
    the cell's line marks in perf_counter seconds; one pair read unbracketed
    is off by however long the thread was held between the two reads (a
    preempted virtual CPU, another thread taking the GIL: milliseconds under
    load), and every event's line with it."""
    best: tuple[float, int, float] | None = None
    for _ in range(CLOCK_PAIR_TRIES):
        before = time.perf_counter()
        wall = time.time_ns()
        after = time.perf_counter()
        if best is None or after - before < best[0]:
            best = (after - before, wall, before + (after - before) / 2)
    assert best is not None
    return best[1], best[2]


@dataclass(frozen=True)
class DetailWindow:
    """The training steps recorded in full detail: `first` to `last`, 1-based
    and inclusive; `last` None: to the end of the run. The other steps are
    measured by their boundaries only."""

    first: int = 1
    last: int | None = DETAIL_STEPS

    @classmethod
    def of(cls, value: DetailWindow | int | str | tuple[int, int | None] | None) -> DetailWindow:
        """N (steps 1 to N), (first, last), None (every step), a window, or
        the command line's text ("all", "N", "A-B", "A-")."""
        if isinstance(value, DetailWindow):
            return value
        if value is None:
            return cls(1, None)
        if isinstance(value, int):
            return cls(1, value)
        if isinstance(value, str):  # "all", "N", "A-B", "A-" as on the command line
            return cls.parse(value)
        try:
            first, last = value
        except (TypeError, ValueError):
            raise ValueError(
                f"detail_steps takes N, (first, last), None (every step) or 'all', 'N', 'A-B', 'A-'; got {value!r}"
            ) from None
        return cls(int(first), None if last is None else int(last))

    def __post_init__(self) -> None:
        if self.first < 1 or (self.last is not None and self.last < self.first):
            raise ValueError(
                f"detail steps must run from step 1 or later to a step at or after it, got {self.first}-{self.last}"
            )

    @property
    def everything(self) -> bool:
        return self.first == 1 and self.last is None

    def covers(self, step: int) -> bool:
        """Step `step` (1-based) is recorded in detail."""
        return self.first <= step and (self.last is None or step <= self.last)

    @classmethod
    def parse(cls, text: str) -> DetailWindow:
        """--detail-steps: N (the first N training steps), A-B (steps A to B), A- (step A on) or all."""
        t = text.strip().lower()
        m = re.fullmatch(r"(\d+)?\s*(-)?\s*(\d+)?", t)
        try:
            if t == "all":
                return cls(1, None)
            if m and m.group(1) and not m.group(2) and not m.group(3):
                return cls(1, int(m.group(1)))
            if m and m.group(1) and m.group(2):
                return cls(int(m.group(1)), int(m.group(3)) if m.group(3) else None)
        except ValueError:
            pass
        raise ValueError(
            f"--detail-steps takes N (the first N training steps), A-B (steps A to B), A- (step A "
            f"on) or all, with steps counted from 1, got {text!r}"
        )

    def text(self) -> str:
        """As --detail-steps takes it."""
        if self.everything:
            return "all"
        if self.last is None:
            return f"{self.first}-"
        return str(self.last) if self.first == 1 else f"{self.first}-{self.last}"


@dataclass
class RawDevice:
    """Live bytes of one memory pool as recorded (samples or allocator events)."""

    name: str
    kind: str  # "allocator" | "process"
    source: str  # what measured it: "rss", "c10", "mklcpu", ...
    t: list[float]  # seconds since the run's origin
    live_bytes: list[int]
    baseline_bytes: int
    end_bytes: int
    #: The exact peak from a counter outside the samples (the OS high-water
    #: mark), when there is one; it can exceed max(live_bytes) when the peak
    #: fell between two samples.
    counter_peak_bytes: int | None = None
    capacity_bytes: int | None = None
    recorded_points: int = 0


@dataclass
class AllocationLog:
    """Every allocation of one allocator during a run, columnar (row i = one block).

    Rows with `pre_existing[i]` were live before the run (their t_alloc is 0
    and seq_alloc -1); the rest were allocated during it. Events are ordered
    by time, `seq_*` (the order they were recorded in) breaking ties; a block
    still live at the end has t_free = seq_free = ALIVE. `layer`/`op` are ""
    when unknown.
    """

    device: str
    source: str
    capacity_bytes: int | None = None
    #: True when pre-existing rows account for every byte the allocator held
    #: at the start (CUDA's allocator counters); False when they are only the
    #: tensors that could be found (CPU: the namespace's tensors).
    baseline_exact: bool = False
    size: list[int] = field(default_factory=list)
    t_alloc: list[float] = field(default_factory=list)
    t_free: list[float] = field(default_factory=list)
    seq_alloc: list[float] = field(default_factory=list)
    seq_free: list[float] = field(default_factory=list)
    category: list[str] = field(default_factory=list)
    layer: list[str] = field(default_factory=list)
    op: list[str] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)  # forward | backward | optimizer | other
    shape: list[list[int] | None] = field(default_factory=list)
    dtype: list[str] = field(default_factory=list)
    pre_existing: list[bool] = field(default_factory=list)
    #: Bytes the tensor asked for; `size` is what the allocator gave (after its
    #: rounding) where the allocator says so, else the same.
    requested: list[int] = field(default_factory=list)
    #: The cell line running when each row was allocated (0: before the run;
    #: -1: unknown). Filled after the capture (analysis/lines.py), not by collectors.
    line: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.size)

    def add(
        self,
        size: int,
        t_alloc: float,
        seq_alloc: float,
        *,
        category: str = "other",
        layer: str = "",
        op: str = "",
        phase: str = "other",
        shape: list[int] | None = None,
        dtype: str = "",
        pre_existing: bool = False,
        requested: int | None = None,
    ) -> int:
        self.size.append(size)
        self.t_alloc.append(t_alloc)
        self.t_free.append(ALIVE)
        self.seq_alloc.append(seq_alloc)
        self.seq_free.append(ALIVE)
        self.category.append(category)
        self.layer.append(layer)
        self.op.append(op)
        self.phase.append(phase)
        self.shape.append(shape)
        self.dtype.append(dtype)
        self.pre_existing.append(pre_existing)
        self.requested.append(size if requested is None else requested)
        return len(self.size) - 1


@dataclass
class OpRecord:
    """What one operator name did over the run, as the framework recorded it."""

    name: str
    device: str
    calls: int = 0
    allocated_bytes: int = 0  # including allocations of the ops it called
    self_allocated_bytes: int = 0
    freed_bytes: int = 0
    max_alloc_bytes: int = 0
    input_shapes: list[str] = field(default_factory=list)


@dataclass
class ModuleRecord:
    """One layer/module seen during the run, with what it owns."""

    name: str
    type: str
    parent: str | None
    parameter_bytes: int = 0
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0
    #: Bytes one call returned (the last call), where the collector sees outputs.
    output_bytes: int = 0
    #: The package its class comes from ("torch", "transformers", "timm"; "__main__" for
    #: the notebook's own; "" unknown): advice in the library's own terms.
    library: str = ""
    #: The collector saw it work during the run (called, stepped by an
    #: optimizer, given new gradients). Layers with allocations count as
    #: working too; trees where nothing worked are left out of the table.
    ran: bool = False


@dataclass
class OptimizerStat:
    """An optimizer the run touched or the notebook holds: what it keeps, and
    whether this run stepped it. Rules about optimizer state count only the
    ones the run stepped."""

    name: str  # its variable in the notebook ("opt", "trainer.opt"), else its type
    type: str  # "Adam", "SGD", ...
    stepped: bool = False
    #: Steps taken during the run (optimizer step hooks).
    steps: int = 0
    parameter_bytes: int = 0
    state_bytes: int = 0
    #: Its state did not exist (or was smaller) when the run started.
    state_created: bool = False
    #: The root layers (models) that own its parameters.
    models: list[str] = field(default_factory=list)


@dataclass
class RawCapture:
    collector: str
    devices: list[RawDevice] = field(default_factory=list)
    allocations: list[AllocationLog] = field(default_factory=list)
    ops: list[OpRecord] = field(default_factory=list)
    modules: list[ModuleRecord] = field(default_factory=list)
    frameworks: dict[str, str] = field(default_factory=dict)  # name -> version
    notes: list[RawNote] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    #: Facts about the run used by later stages (e.g. CUDA allocator stats).
    facts: dict[str, int | float | str] = field(default_factory=dict)
    #: The last op that started and its layer: names the failing op when the run raised.
    last_op: dict[str, str] = field(default_factory=dict)
    #: Shapes of the tensors the model(s) were called with, where the collector sees calls.
    input_shapes: list[list[int]] = field(default_factory=list)
    #: Large objects the namespace holds at the end (capture/kept.py).
    kept: list[KeptObject] = field(default_factory=list)
    #: Containers that gained arrays or tensors in the run (capture/kept.py).
    grown: list[GrownContainer] = field(default_factory=list)
    #: (times, lines): when the running cell line changed, and to which
    #: (capture/lines.py); empty when the cell's lines are not followed.
    line_marks: tuple[list[float], list[int]] = ((), ())  # type: ignore[assignment]
    #: Optimizers seen; analysis names their models by the root layers.
    optimizers: list[OptimizerStat] = field(default_factory=list)
    #: Each training step's end (capture/steps.py).
    steps: list[StepRecord] = field(default_factory=list)
    #: The framework trainer that ran the steps (capture/trainers.py), where one did.
    trainer: TrainerInfo | None = None


class Collector(Protocol):
    name: str

    def start(self, origin: float) -> None:
        """Start recording; times are seconds since `origin` (a time.perf_counter()
        value shared by every collector of a run, so their timelines line up)."""
        ...

    def stop(self) -> RawCapture:
        """Stop recording and return what was recorded. Must leave nothing running."""
        ...


_REGISTRY = {
    "host": ("memprofile.capture.host", "HostCollector"),
    "namespace": ("memprofile.capture.namespace", "NamespaceCollector"),
    "lines": ("memprofile.capture.lines", "LinesCollector"),
    "torch": ("memprofile.capture.torch", "TorchCollector"),
    "tensorflow": ("memprofile.capture.tensorflow", "TensorFlowCollector"),
}


def create_collector(name: str, **options) -> Collector:
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown collector {name!r}; known: {', '.join(_REGISTRY)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)


@dataclass
class RecordedRun:
    """A run read back from a file a profiler wrote (`memprofile import`):
    the captures, as the live collectors would have made them, and what the
    file says about the run."""

    captures: list[RawCapture]
    #: What was read, in words ("PyTorch kineto trace, 1x NVIDIA H100 80GB HBM3").
    description: str
    duration_s: float = 0.0
    #: ISO 8601 (UTC) start, "" when the file does not say.
    started_at: str = ""
    #: What the file lacks that a live capture has, each one line
    #: ("no module scopes (recorded without with_modules): no layers").
    lacks: list[str] = field(default_factory=list)
