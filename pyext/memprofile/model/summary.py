"""The compact record sent as the cell output's custom MIME type.

It is what the inline card needs (and nothing the panel must fetch separately):
the peak, the split by category at the peak, a short sparkline, the top
suggestion. Built by render/bundle.py; its JSON Schema sits beside Profile's.
It carries the card's sentences and the sparkline's drawing as render/ makes
them for every view, so the card (labextension/card.ts) only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memprofile.model.profile import Device, ErrorInfo, LineStat, Note, TensorInfo


@dataclass
class SparklineDrawing:
    """The sparkline as drawn (render/sparkline.py): a line through `points`
    ([x, y] in a width × height box, y downwards) that holds each value until
    the next, the highest point, and what the line and the point show."""

    width: int
    height: int
    points: list[list[float]]
    peak: list[float]
    title: str
    peak_title: str


@dataclass
class Sparkline:
    device: str
    t: list[float]
    bytes: list[int]
    #: The line drawn at the card's size (None in summaries from before it: the card then draws no line).
    drawing: SparklineDrawing | None = None


@dataclass
class SuggestionBrief:
    id: str
    title: str
    estimated_saving_bytes: int | None = None


@dataclass
class StepsBrief:
    """The training steps in one line's figures (the card's steps line):
    how many, which were recorded in detail, the highest step, and live
    bytes at the end of the first and the last step. Peaks and ends are the
    allocator's where every step has one (`*_exact`), else the process's
    resident memory."""

    count: int
    detail_first: int | None = None
    detail_last: int | None = None
    highest_step: int | None = None
    highest_bytes: int | None = None
    peaks_exact: bool = False
    end_first_bytes: int | None = None
    end_last_bytes: int | None = None
    ends_exact: bool = False
    #: Not exact, but every step's figure is known or estimated from the C heap (torch on CPU).
    peaks_estimated: bool = False
    ends_estimated: bool = False
    #: The line itself, as the text report writes it (render/lines.py steps_text); '' in summaries from before it.
    text: str = ""


@dataclass
class ProfileSummary:
    schema_version: int
    id: str
    name: str
    started_at: str
    duration_s: float
    peak_bytes: int
    peak_device: str | None
    peak_time_s: float | None
    devices: list[Device]
    by_category: dict[str, int]
    sparkline: Sparkline | None = None
    top_suggestion: SuggestionBrief | None = None
    suggestion_count: int = 0
    error: ErrorInfo | None = None
    #: Where the error happened, as the text report says it (render/text.py failure_place):
    #: "in op aten::empty, layer big, line 3, asking for 16.0 GiB"; None without an error or a place.
    error_place: str | None = None
    #: Notes on the capture, each with the fix that lifts its limit where there is one.
    warnings: list[Note] = field(default_factory=list)
    #: What the peak was made of: the op, layer and cell line running at the
    #: peak instant, and the largest tensors alive then (at most 3).
    peak_op: str | None = None
    peak_layer: str | None = None
    peak_line: int | None = None
    peak_line_text: str | None = None
    peak_tensors: list[TensorInfo] = field(default_factory=list)
    #: The cell's lines that hold the most at the peak (at most 5), in line order.
    peak_lines: list[LineStat] = field(default_factory=list)
    #: The training steps, in one line's figures (None: no step).
    steps: StepsBrief | None = None
    #: Where the breakdown is of another moment than the headline (Profile.peak_scope).
    peak_scope: str | None = None
    #: The will-it-fit predictions in one line, as render/prediction.py's fits_line words it
    #: ("predicted fits: T4 16 GB ✓ 41 % · …"); None without a prediction.
    fits_line: str | None = None
