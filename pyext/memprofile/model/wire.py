"""What goes over the "memprofile" comm between the kernel and the JupyterLab
panel: every message (each with its `type`), and the payloads they carry (the
profile as the panel draws it, a suggestion with its text, a comparison).

Plain dataclasses like Profile's: render/panel.py builds the payloads,
jupyter/comm.py sends the messages (`to_dict`) and parses the requests
(`parse_request`, through the codec). model/schema.py puts them in
profile.schema.json beside Profile, and labextension/schema.ts's types are
generated from it, so the panel's types are these.

Each message's `type` is a field whose one value is its default: always
sent (the schema requires it). Other fields with a default may be missing
from an older kernel's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from memprofile.model.codec import decode
from memprofile.model.profile import LineStat, Prediction, Suggestion
from memprofile.model.summary import ProfileSummary

# -- payloads ------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PanelSuggestion(Suggestion):
    """A suggestion as the panel gets it: the Suggestion, with its saving and
    how to apply it as text (render/text.py's words)."""

    saving_text: str
    how: str


@dataclass
class PanelProfile:
    """A profile's full data for the panel (render/panel.py): the summary,
    the views as bokeh json_items (drawn by the BokehJS of `bokeh_version`),
    the suggestions and the cell's lines as data."""

    id: str
    bokeh_version: str
    summary: ProfileSummary
    views: dict[str, Any]
    suggestions: list[PanelSuggestion]
    source: str
    #: What "Try it" asks before it runs the cell again.
    rerun_warning: str
    #: Every line of the cell, in order, with its figures (zero for a line that allocated nothing;
    #: line 0: memory from before it); empty when lines are unknown.
    lines: list[LineStat] = field(default_factory=list)
    #: The line running at the peak instant.
    peak_line: int | None = None
    #: The will-it-fit predictions made for it so far, in the order asked.
    predictions: list[Prediction] = field(default_factory=list)
    #: The devices "predict" knows by name (analysis/predict/devices.py), for the panel's choice.
    known_devices: list[str] = field(default_factory=list)


@dataclass
class ChangeRow:
    """One figure before and after (delta = after - before)."""

    name: str
    before: int
    after: int
    delta: int


@dataclass
class PanelComparison:
    """compare(a, b) as the panel draws it: names, the headline, and the
    changes as rows (kinds of memory by their labels)."""

    a: str
    b: str
    a_name: str
    b_name: str
    device: str
    headline: str
    peak: ChangeRow
    #: Peak before minus peak after: negative when b needs more.
    saving_bytes: int
    peak_change_percent: float | None
    time_change: float | None
    categories: list[ChangeRow]
    layers: list[ChangeRow]
    ops: list[ChangeRow]
    more_layers: int
    more_ops: int
    #: Which runs were compared and why (a run that created state, a warm run used instead).
    notes: list[str] = field(default_factory=list)


# -- pushed by the kernel ------------------------------------------------------------------------------------------


@dataclass
class HelloMessage:
    """The comm's open data: the kernel's memprofile version."""

    version: str
    type: Literal["hello"] = "hello"


@dataclass
class AddedMessage:
    """A profile was stored; `dropped`: how many the bounded store has let go."""

    summary: ProfileSummary
    dropped: int
    type: Literal["added"] = "added"


@dataclass
class ClearedMessage:
    """The store was cleared."""

    type: Literal["cleared"] = "cleared"


# -- requests from the panel ---------------------------------------------------------------------------------------


@dataclass
class SyncRequest:
    """Every stored profile, oldest first."""

    type: Literal["sync"] = "sync"
    request_id: str | None = None


@dataclass
class GetProfileRequest:
    """One profile as the panel draws it."""

    id: str
    type: Literal["get_profile"] = "get_profile"
    request_id: str | None = None


@dataclass
class CompareRequest:
    """Compare profile a (before) with b (after)."""

    a: str
    b: str
    type: Literal["compare"] = "compare"
    request_id: str | None = None


@dataclass
class ExportRequest:
    """Write the HTML report (path: none, a name after the profile's, in the kernel's folder)."""

    id: str
    path: str | None = None
    type: Literal["export"] = "export"
    request_id: str | None = None


@dataclass
class TryRequest:
    """Re-run the profile's cell under a suggestion's change and measure it."""

    id: str
    suggestion: str
    type: Literal["try"] = "try"
    request_id: str | None = None


@dataclass
class PredictRequest:
    """Will the profile's run fit on `device` (a known name; else capacity_bytes) at
    `batch` and `seq_len` (as typed: "64", or "4x" of the measured; none: as measured)?
    (Profile.predict)"""

    id: str
    device: str | None = None
    batch: str | None = None
    seq_len: str | None = None
    capacity_bytes: int | None = None
    type: Literal["predict"] = "predict"
    request_id: str | None = None


@dataclass
class BokehjsRequest:
    """The kernel's own BokehJS, which draws the views its bokeh makes."""

    type: Literal["bokehjs"] = "bokehjs"
    request_id: str | None = None


# -- replies (each echoes its request's request_id) ----------------------------------------------------------------


@dataclass
class ProfilesReply:
    """The answer to "sync": the summaries, oldest first."""

    items: list[ProfileSummary]
    dropped: int
    capacity: int
    type: Literal["profiles"] = "profiles"
    request_id: str | None = None


@dataclass
class ProfileReply(PanelProfile):
    """The answer to "get_profile"."""

    type: Literal["profile"] = "profile"
    request_id: str | None = None


@dataclass
class ComparisonReply(PanelComparison):
    """The answer to "compare"."""

    type: Literal["comparison"] = "comparison"
    request_id: str | None = None


@dataclass
class ExportedReply:
    """The answer to "export": the report's absolute path."""

    path: str
    type: Literal["exported"] = "exported"
    request_id: str | None = None


@dataclass
class TriedReply:
    """The answer to "try": what the trial measured (its comparison's figures),
    the line the panel shows as it is, and the profiles the runs made."""

    id: str
    suggestion: str
    change: str
    #: Peak before minus peak after: negative when the change made it worse.
    saving_bytes: int
    time_change: float | None
    peak_before_bytes: int
    peak_change_percent: float | None
    headline: str
    notes: list[str]
    before: str
    after: str
    first: str | None
    #: State each run created that the next run starts with: profile name -> category -> bytes.
    created: dict[str, dict[str, int]]
    type: Literal["tried"] = "tried"
    request_id: str | None = None


@dataclass
class PredictedReply:
    """The answer to "predict": the prediction (every figure predicted, none measured)
    and its sentences as render/prediction.py writes them."""

    id: str
    prediction: Prediction
    text: str
    type: Literal["predicted"] = "predicted"
    request_id: str | None = None


@dataclass
class BokehjsReply:
    """The answer to "bokehjs": the kernel's bokeh version and its BokehJS
    scripts (bokeh, widgets, tables), in load order (render/bokehjs.py)."""

    version: str
    scripts: list[str]
    type: Literal["bokehjs_scripts"] = "bokehjs_scripts"
    request_id: str | None = None


@dataclass
class ErrorReply:
    """A request the kernel could not answer, and why."""

    message: str
    type: Literal["error"] = "error"
    request_id: str | None = None


# -- live memory while a profiled cell runs (issue 30) ------------------------------------


@dataclass
class LiveDevice:
    """One memory pool as the kernel reads it now: a framework allocator ("cuda:0" from
    torch's counters, TensorFlow's "GPU:0" from get_memory_info) or the process ("host")."""

    name: str
    in_use_bytes: int
    #: What the allocator holds from the device (CUDA's reserved; None where it keeps none).
    reserved_bytes: int | None = None
    #: The most in use since the last sample sent: a peak between two messages is kept.
    max_in_use_bytes: int | None = None
    #: What the device can hold (a GPU's memory, the machine's RAM or the cgroup's limit,
    #: or the capacity the user stated): None unknown.
    capacity_bytes: int | None = None


@dataclass
class LiveSample:
    """One point of the running cell's live timeline."""

    #: Seconds since the run started, and the kernel's wall clock (epoch seconds) then.
    t: float
    clock: float
    devices: list[LiveDevice]
    #: Training steps ended so far, and the last one's peak and end, by device name.
    step: int = 0
    step_peak_bytes: dict[str, int] = field(default_factory=dict)
    step_end_bytes: dict[str, int] = field(default_factory=dict)
    #: The detail (every allocation per op) is recording now.
    detail: bool = False
    #: The process's C heap in use (glibc's mallinfo2: what it handed out and not taken back;
    #: None off glibc): it grows with what is allocated where resident memory reuses pages.
    heap_bytes: int | None = None


@dataclass
class LiveStartMessage:
    """A profiled cell started: `run` names it in the messages that follow."""

    run: str
    name: str
    started: float  # the kernel's wall clock, epoch seconds
    #: The profiler's own memory budget, and the memory the user stated the run may use.
    budget_bytes: int | None = None
    capacity_bytes: int | None = None
    type: Literal["live_start"] = "live_start"


@dataclass
class LiveMessage:
    """The running cell's newest sample(s) (at least 10 a second while a frontend listens),
    and what the feed warns of now ("at +2.0 MiB per step, cuda:0 is full in about 40 steps
    (step 52)"; "the peak is within 10 % of cuda:0's capacity")."""

    run: str
    samples: list[LiveSample]
    warnings: list[str] = field(default_factory=list)
    type: Literal["live"] = "live"


@dataclass
class LiveEndMessage:
    """The profiled cell ended; `profile_id` is its stored profile (None: none was stored)."""

    run: str
    profile_id: str | None = None
    type: Literal["live_end"] = "live_end"


@dataclass
class LiveRequest:
    """Send the live feed (`on`) or stop it. The reply carries the running cell's feed so far
    (after a page reload, the timeline resumes where it was)."""

    on: bool = True
    type: Literal["live"] = "live"
    request_id: str | None = None


@dataclass
class LiveReply:
    """The answer to "live": the running cell (None: none runs), its samples so far
    (decimated to at most 1,000, peaks kept) and its warnings."""

    start: LiveStartMessage | None = None
    samples: list[LiveSample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    type: Literal["live_state"] = "live_state"
    request_id: str | None = None


Push = AddedMessage | ClearedMessage | LiveStartMessage | LiveMessage | LiveEndMessage
Request = (
    SyncRequest
    | GetProfileRequest
    | CompareRequest
    | ExportRequest
    | TryRequest
    | PredictRequest
    | BokehjsRequest
    | LiveRequest
)
Reply = (
    ProfilesReply
    | ProfileReply
    | ComparisonReply
    | ExportedReply
    | TriedReply
    | PredictedReply
    | BokehjsReply
    | LiveReply
    | ErrorReply
)

#: Each request's `type`, and the reply that answers it (else an ErrorReply).
REPLIES: dict[str, tuple[type, type]] = {
    "sync": (SyncRequest, ProfilesReply),
    "get_profile": (GetProfileRequest, ProfileReply),
    "compare": (CompareRequest, ComparisonReply),
    "export": (ExportRequest, ExportedReply),
    "try": (TryRequest, TriedReply),
    "predict": (PredictRequest, PredictedReply),
    "bokehjs": (BokehjsRequest, BokehjsReply),
    "live": (LiveRequest, LiveReply),
}


def parse_request(data: Any) -> Request:
    """A request from the panel, checked field by field (ProfileFormatError
    names the bad one); ValueError for a type nobody sends."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind not in REPLIES:
        raise ValueError(f"unknown request {kind!r}")
    request: Request = decode(REPLIES[kind][0], data, f"{kind} request")
    return request
