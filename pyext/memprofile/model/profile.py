"""The Profile record: the contract between kernel, panel, HTML report and CLI.

Plain dataclasses, JSON-serialisable through `to_dict`/`from_dict` in
`model/codec.py`. Byte figures are ints in bytes; times are floats in seconds.
Bump SCHEMA_VERSION on any change a reader of an older version cannot ignore,
and regenerate the JSON Schema (`python -m memprofile.model.schema --write`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, overload

from memprofile.capture.base import OptimizerStat as OptimizerStat  # what an optimizer keeps: made at capture
from memprofile.capture.distributed import RankInfo as RankInfo  # read from the launcher, at capture
from memprofile.capture.kept import GrownContainer as GrownContainer  # what the namespace keeps: made at capture
from memprofile.capture.kept import GrownItem as GrownItem
from memprofile.capture.kept import KeptObject as KeptObject
from memprofile.capture.names import root_of as root_of  # layer trees: capture names them, model and analysis read them
from memprofile.capture.trainers import TrainerInfo as TrainerInfo  # the framework trainer: found at capture
from memprofile.storage import Url

SCHEMA_VERSION = 1

#: Memory categories, in the order reports stack them.
CATEGORIES: tuple[str, ...] = (
    "parameter",
    "gradient",
    "optimizer_state",
    "activation",
    "temporary",
    "input",
    "other",
)
#: Training phases a timeline point can be in (Timeline.phase indexes this).
PHASES: tuple[str, ...] = ("forward", "backward", "optimizer")

DeviceKind = Literal["allocator", "process"]
Placement = Literal["below", "top"]


@dataclass
class Framework:
    """A framework seen during the run, with its version."""

    name: str
    version: str


@dataclass
class Device:
    """One memory pool whose live bytes were followed.

    kind "allocator": a framework allocator (torch "cpu"/"cuda:0", TF "GPU:0");
    kind "process": the whole process as the OS sees it (resident set, "host").
    """

    name: str
    kind: DeviceKind
    #: What measured it: "rss" (OS), "c10" (torch), "mklcpu"/"bfc" (TF), ...
    source: str
    peak_bytes: int
    baseline_bytes: int
    end_bytes: int
    capacity_bytes: int | None = None
    #: Bytes already live at cell start, per memory category, where known.
    baseline_by_category: dict[str, int] = field(default_factory=dict)
    #: The allocator's own counters at the end, where it keeps them (CUDA:
    #: reserved_bytes, fragmentation_permille, alloc_retries, ooms, ...).
    allocator_stats: dict[str, int] = field(default_factory=dict)


@dataclass
class Timeline:
    """Live bytes of one device over time, columnar (one entry per sample/event).

    `op` and `layer` index into `labels` (-1: none). `by_category` maps a
    category to a column of the same length as `t`; it is empty when the device
    cannot tell categories apart (process RSS). `phase` is the training phase of
    the event behind each point, an index into PHASES (-1: unknown).
    """

    device: str
    t: list[float]
    live_bytes: list[int]
    by_category: dict[str, list[int]] = field(default_factory=dict)
    op: list[int] = field(default_factory=list)
    layer: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)
    #: Samples or events recorded before any reduction for storage.
    recorded_points: int = 0


@dataclass
class OpStat:
    name: str
    device: str
    calls: int
    allocated_bytes: int
    self_allocated_bytes: int
    freed_bytes: int
    net_bytes: int
    max_alloc_bytes: int
    input_shapes: list[str] = field(default_factory=list)
    #: The line of the cell where the op allocated the most (None: unknown).
    line: int | None = None


@dataclass
class LayerStat:
    """One module/layer; `name` is qualified ("encoder.layers.3.self_attn")."""

    name: str
    type: str
    parent: str | None
    parameter_bytes: int = 0
    gradient_bytes: int = 0
    optimizer_state_bytes: int = 0
    activation_bytes: int = 0
    temporary_bytes: int = 0
    forward_bytes: int = 0
    backward_bytes: int = 0
    peak_bytes: int = 0
    #: Bytes of what one call returns (its last call; 0 where unknown): what a
    #: checkpointed layer still keeps for the next one.
    output_bytes: int = 0
    #: The line of the cell that allocated the most in this layer (None: unknown).
    line: int | None = None
    #: The package its class comes from ("torch", "transformers"; "__main__": the notebook's
    #: own; "": unknown).
    library: str = ""


@dataclass
class TensorInfo:
    shape: list[int]
    dtype: str
    bytes: int
    category: str
    op: str | None = None
    layer: str | None = None
    device: str | None = None
    #: The line of the cell that was running when it was allocated (0: it
    #: existed before the cell; None: unknown).
    line: int | None = None
    #: What the tensor asked for, where the allocator gave a larger block
    #: (TF's BFC rounds an 8 MiB tensor up to a 16 MiB block); None: the same.
    requested_bytes: int | None = None


@dataclass
class LineStat:
    """One line of the profiled cell: what was allocated while it ran (all
    devices' allocators), and what of it was alive at the peak (peak device).
    Line 0 stands for the memory that existed before the cell."""

    line: int
    text: str
    allocated_bytes: int = 0
    peak_bytes: int = 0
    #: Bytes alive at the peak made on this line, per memory category.
    by_category: dict[str, int] = field(default_factory=dict)
    #: The ops and layers that allocated the most on this line (at most 3 each).
    ops: dict[str, int] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)


@dataclass
class Prediction:
    """What a run would need on a device, at a batch (and sequence length): predicted,
    not measured (memprofile/whatif/predict.py makes it; docs/will_it_fit.md)."""

    device: str
    capacity_bytes: int
    #: The torch allocator's highest live bytes.
    allocated_peak_bytes: int
    #: The caching allocator's reserved peak (simulated on CUDA; the allocated peak on the CPU).
    reserved_peak_bytes: int
    #: Reserved plus what the device holds outside the allocator (the CUDA context).
    device_total_bytes: int
    #: device_total_bytes leaves the device's headroom free.
    fits: bool
    #: How it was made: "fake execution" (the cell re-executed on fake tensors), "keras layers"
    #: (a Keras model's layers and optimizer slots) or "replay" (the recorded timeline, its
    #: batch-sized memory scaled).
    method: str
    headroom: float = 0.15
    #: The batch and sequence length predicted for, and the measured run's (None: unknown).
    batch: int | None = None
    measured_batch: int | None = None
    seq_len: int | None = None
    measured_seq_len: int | None = None
    #: The largest batch that fits (None: not searched, or no batch dimension found).
    largest_batch: int | None = None
    #: Gradient-accumulation steps that keep `batch` as the effective batch at largest_batch.
    accumulation_steps: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        """The device's share the run would take."""
        return self.device_total_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


@dataclass
class StepStat:
    """One training step (an optimizer step ends it), 1-based. Detailed steps
    were recorded event by event; the others only by their boundaries."""

    index: int
    t_start: float
    t_end: float
    detailed: bool
    #: Peak and live bytes at the step's end on the framework device, where
    #: known exactly (detailed steps from the allocator's events; every step
    #: on CUDA from its counters); None otherwise.
    peak_bytes: int | None = None
    end_bytes: int | None = None
    device: str | None = None
    #: The process's resident memory: its peak in the step (exact where the OS
    #: keeps a high-water mark, read and reset at each step's end; else the
    #: highest sample), and at the step's end.
    rss_peak_bytes: int | None = None
    rss_end_bytes: int | None = None
    #: Where the exact peak above covers this step and the ones before it
    #: (steps shorter than ~50x reading the OS mark are read in groups), the
    #: first step it covers; None where it is this step's alone.
    rss_peak_first: int | None = None
    #: The C heap's bytes in use at the step's end (glibc's mallinfo2: CPU
    #: tensors and everything else malloc'd), where known: unlike resident
    #: memory it grows with what a step keeps even where the heap reuses
    #: pages freed earlier.
    heap_end_bytes: int | None = None
    #: Outside the detail, where the allocator keeps no counter (torch on
    #: CPU): its live bytes at the step's end, estimated as the detail's last
    #: live bytes plus what the C heap gained since the detail ended; and the
    #: step's peak, estimated as that at the step before plus what the
    #: highest detailed step rose above its own start. Estimates: the heap
    #: also holds what is not a tensor.
    end_estimate_bytes: int | None = None
    peak_estimate_bytes: int | None = None


@dataclass
class Peak:
    """What was alive at the peak instant of the peak device."""

    device: str
    time_s: float
    bytes: int
    op: str | None = None
    layer: str | None = None
    #: The line of the cell running at the peak instant (None: unknown).
    line: int | None = None
    by_category: dict[str, int] = field(default_factory=dict)
    by_layer: dict[str, int] = field(default_factory=dict)
    #: Line of the cell (1-based; 0: before the cell) -> bytes alive at the
    #: peak that were allocated while it ran.
    by_line: dict[int, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    #: Activation bytes live at the peak, per layer (the checkpointing rule's
    #: ranking); the layer's own, not its children's.
    activation_by_layer: dict[str, int] = field(default_factory=dict)
    #: Shapes of the model inputs (distinct, at most 8): those the collector saw
    #: the model called with, else the input tensors live at the peak. The
    #: batch dimension for the batch-size and dataset rules.
    input_shapes: list[list[int]] = field(default_factory=list)


@dataclass
class Suggestion:
    """What to change, why (evidence: figures from this profile), how much it
    should save, and the code. `try_change` is the `%%memprofile --try` value
    that applies it in place (None: it cannot be tried in place); once tried,
    `measured_saving_bytes` (peak before minus after) and
    `measured_time_change` (after/before - 1) hold what the trial measured."""

    id: str
    title: str
    evidence: str
    code: str
    placement: Placement = "below"
    estimated_saving_bytes: int | None = None
    measured_saving_bytes: int | None = None
    restart_kernel: bool = False
    can_try: bool = False
    try_change: str | None = None
    measured_time_change: float | None = None
    #: The peak of the as-is run the saving was measured against: the
    #: measured percentage's denominator (analysis.compare.peak_change_percent).
    measured_peak_before_bytes: int | None = None
    #: How estimated_saving_bytes was made: "fake execution" (the cell re-executed with
    #: this code on fake tensors, whatif/estimate.py) or "replay" (the rule's model of
    #: the recorded timeline); None: an older profile.
    estimate_method: str | None = None


@dataclass
class ErrorInfo:
    """The exception a profiled cell raised. `p.error["type"]` works as well."""

    type: str
    message: str
    traceback: str = ""
    #: Where the framework was when it failed, where known (the op that ran
    #: last, its layer, and for out-of-memory errors the bytes it asked for).
    op: str | None = None
    layer: str | None = None
    requested_bytes: int | None = None
    #: The line of the cell that was running when it raised.
    line: int | None = None
    #: The message without the stack trace a framework puts in it (TF's "Detected at node ...
    #: defined at" frames, a DataLoader worker's traceback) and TF's hints: what the card leads
    #: with; `message` keeps all of it. None: an older profile (the message is the headline).
    headline: str | None = None
    #: How many stack frames the message carries (folded on the card).
    message_frames: int = 0

    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


@dataclass
class Note:
    """A warning or remark about the capture itself (code is stable, message
    human). `fix`: what the user runs to lift the limit the note names (a
    magic line to run the cell again with, or code for the notebook's first
    cell), shown with the note on the card, in the panel and in reports."""

    code: str
    message: str
    fix: str | None = None


@dataclass
class RankSummary:
    """One rank of a merged profile, in figures small enough for 128 ranks:
    its peak and what was alive then, and its timeline reduced to at most a
    few hundred points (each stretch's lowest and highest, so the peak is
    kept) on the merged time axis."""

    rank: int
    name: str
    peak_bytes: int
    peak_device: str
    duration_s: float
    local_rank: int | None = None
    host: str = ""
    #: The file it was read from ("" for a profile merged from memory).
    path: str = ""
    #: Its start on the merged time axis (seconds after the earliest rank's).
    offset_s: float = 0.0
    #: When it peaked, on the merged time axis.
    peak_time_s: float | None = None
    baseline_bytes: int = 0
    end_bytes: int = 0
    #: The process's resident peak (host), where recorded.
    process_peak_bytes: int | None = None
    by_category: dict[str, int] = field(default_factory=dict)
    #: The layers, lines and tensors with the most bytes alive at its peak (a few of each).
    by_layer: dict[str, int] = field(default_factory=dict)
    by_line: dict[int, int] = field(default_factory=dict)
    line_text: dict[int, str] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    steps: int = 0
    #: "Type: message" of what it raised, if it did.
    error: str | None = None
    #: Where it peaked above its detailed steps (its own step_above_detail note): its
    #: peak above covers the detailed steps only.
    outside_detail: str = ""
    t: list[float] = field(default_factory=list)
    live_bytes: list[int] = field(default_factory=list)

    @property
    def standing(self) -> tuple[int, int]:
        """The order of ranks, the highest last: by peak; of equal peaks the
        lower rank is the higher, in whatever order the files come."""
        return (self.peak_bytes, -self.rank)


@dataclass
class RankExcess:
    """Something the highest rank holds at its peak beyond the typical rank
    (the median of the others): a kind of memory, a layer, a line or a tensor."""

    kind: Literal["category", "layer", "line", "tensor"]
    name: str
    bytes: int
    others_bytes: int


@dataclass
class MergeInfo:
    """What a merged profile knows beyond its highest rank's detail: every
    rank's summary, which peaks highest and by how much, and the ranks'
    timelines on one time axis (aligned by each host's wall clock)."""

    world_size: int
    ranks: list[RankSummary]
    highest: int
    lowest: int
    #: Highest peak over the mean peak, minus 1 (0: balanced; 0.25: the highest holds 25 % more).
    imbalance: float
    #: Latest rank start minus earliest: how far apart the ranks began (clock offsets between hosts add to it).
    skew_s: float
    backend: str = ""
    run_id: str = ""
    hosts: int = 1
    #: What the highest rank holds at its peak that the typical rank does not, largest first.
    excess: list[RankExcess] = field(default_factory=list)
    #: Ranks of world_size that wrote no profile.
    missing: list[int] = field(default_factory=list)
    #: Full timelines of the top ranks' peak devices ("rank 3 · cuda:0"), on the merged axis.
    timelines: list[Timeline] = field(default_factory=list)

    def summary_of(self, rank: int) -> RankSummary:
        return next(r for r in self.ranks if r.rank == rank)


@dataclass
class Profile:
    id: str
    name: str
    started_at: str  # ISO 8601, UTC
    duration_s: float
    source: str = ""
    frameworks: list[Framework] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    timelines: list[Timeline] = field(default_factory=list)
    ops: list[OpStat] = field(default_factory=list)
    layers: list[LayerStat] = field(default_factory=list)
    peak: Peak | None = None
    suggestions: list[Suggestion] = field(default_factory=list)
    error: ErrorInfo | None = None
    warnings: list[Note] = field(default_factory=list)
    #: Which collectors ran and with what options (strings, for display).
    capture: dict[str, str] = field(default_factory=dict)
    #: Large arrays/tensors the namespace holds after the run, largest first.
    kept: list[KeptObject] = field(default_factory=list)
    #: Containers that gained arrays or tensors in the run, largest first.
    grown: list[GrownContainer] = field(default_factory=list)
    #: Said next to the headline where the breakdown (kinds, layers, lines,
    #: tensors at the peak) is of another moment than the headline peak, or a
    #: step outside the detail went higher (analysis/steps.py peak_scope).
    peak_scope: str | None = None
    #: The cell's lines that allocated, in line order (empty: lines unknown).
    lines: list[LineStat] = field(default_factory=list)
    #: Optimizers seen during the run (stepped or held by the namespace).
    optimizers: list[OptimizerStat] = field(default_factory=list)
    #: Training steps (optimizer steps), in order; empty for cells without.
    steps: list[StepStat] = field(default_factory=list)
    #: Will-it-fit predictions made for it (`%%memprofile --predict`, `p.predict`), in order asked.
    predictions: list[Prediction] = field(default_factory=list)
    #: Its rank, where it ran as one process of a distributed job.
    distributed: RankInfo | None = None
    #: Set on a merged profile (memprofile.merge): the ranks; its other fields are the highest rank's.
    merged: MergeInfo | None = None
    #: The framework trainer that ran the training steps (Hugging Face, Lightning), where one did.
    trainer: TrainerInfo | None = None
    schema_version: int = SCHEMA_VERSION

    # -- derived figures -------------------------------------------------
    @property
    def peak_device(self) -> Device | None:
        """The device whose peak is `peak_bytes`: framework allocators win over
        process RSS, which also counts the interpreter and libraries, and of
        those, one the run added memory to wins over one it left alone (a
        Keras cell in a notebook that also holds a PyTorch model, say); when
        no allocator grew but the process did, the process is the headline."""
        allocators = [d for d in self.devices if d.kind == "allocator"]
        # A cell that freed memory before it worked never went above its start, but worked.
        active = [d for d in allocators if d.peak_bytes > d.baseline_bytes or "working_peak_bytes" in d.allocator_stats]
        # A cell that grew only the process (numpy, say) in a notebook that
        # has imported torch: the idle allocator's peak would mislead.
        grown = [d for d in self.devices if d.kind == "process" and d.peak_bytes > d.baseline_bytes]
        pool = active or grown or allocators or self.devices
        return max(pool, key=lambda d: d.peak_bytes, default=None)

    @property
    def process_device(self) -> Device | None:
        """The process's resident memory (RSS), where it was sampled."""
        return next((d for d in self.devices if d.kind == "process"), None)

    @property
    def peak_bytes(self) -> int:
        device = self.peak_device
        return device.peak_bytes if device else 0

    @property
    def rank(self) -> int | None:
        """Its rank in a distributed job (None: not one rank of a job)."""
        return self.distributed.rank if self.distributed else None

    def line_text(self, line: int | None) -> str | None:
        """The source text of a cell line (stripped), from its lines or its source."""
        if line is None or line <= 0:
            return None
        stat = next((s for s in self.lines if s.line == line), None)
        if stat is not None and stat.text:
            return stat.text
        source = self.source.splitlines()
        return source[line - 1].strip() if line <= len(source) else None

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r} in profile; devices: {[d.name for d in self.devices]}")

    def timeline(self, device: str) -> Timeline | None:
        return next((t for t in self.timelines if t.device == device), None)

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        from memprofile.model.codec import to_dict

        return to_dict(self)

    def to_json(self, indent: int | None = None) -> str:
        from memprofile.model.codec import dumps

        return dumps(self, indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        from memprofile.model.codec import profile_from_dict

        return profile_from_dict(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        from memprofile.model.codec import loads

        return loads(text)

    @overload
    def save(self, path: Path) -> Path: ...

    @overload
    def save(self, path: str | Path | Url) -> Path | Url: ...

    def save(self, path: str | Path | Url) -> Path | Url:
        """Write the profile as JSON (gzip-compressed when the name ends in .gz);
        `path` may be an fsspec URL (s3://bucket/name.memprofile.json.gz)."""
        from memprofile.model.codec import save

        return save(self, path)

    @overload
    def save_html(self, path: Path) -> Path: ...

    @overload
    def save_html(self, path: str | Path | Url) -> Path | Url: ...

    def save_html(self, path: str | Path | Url) -> Path | Url:
        """Write a self-contained HTML report that works offline (`path`: a file, or an fsspec URL)."""
        from memprofile.errors import writing
        from memprofile.render.report import write_report

        with writing(str(path)):  # a URL's own errors are one line already
            return write_report(self, path)

    def predict(
        self,
        device: str | int = "cpu",
        batch: int | str | None = None,
        seq_len: int | str | None = None,
        *,
        capacity_bytes: int | None = None,
        expandable_segments: bool = False,
        largest_batch: bool = True,
    ) -> Prediction:
        """Will the run fit on `device` ("T4", "H100-80GB", "cpu", or bytes) at `batch`
        (an int, or "4x" of the measured batch) and `seq_len`? Re-executes the cell on
        fake tensors where this kernel still has its names; else replays the recorded
        timeline. The prediction is also kept in `self.predictions`."""
        from memprofile.whatif.predict import predict

        made = predict(
            self,
            capacity_bytes if capacity_bytes is not None else device,
            batch=batch,
            seq_len=seq_len,
            expandable_segments=expandable_segments,
            search=largest_batch,
        )
        self.predictions.append(made)
        return made

    def widget(self):
        """An ipywidgets view (tabs: summary, peak, layers, ops, suggestions)
        for frontends without the JupyterLab extension."""
        from memprofile.jupyter.widget import profile_widget

        return profile_widget(self)

    # -- notebook display ------------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from memprofile.jupyter.display import notebook_bundle

        return notebook_bundle(self)

    def __repr__(self) -> str:
        from memprofile.render.text import one_line

        return f"<Profile {one_line(self)}>"
