"""The kernel side of the JupyterLab panel: one comm, target "memprofile".

`%load_ext memprofile` opens it (the panel registers the target on every
notebook kernel; after a page reload it finds the open comm again through
comm_info and re-attaches with the same id). The kernel pushes a message as
soon as the store changes, and answers requests; each reply echoes the
request's `request_id`.

Pushed:   {"type": "added", "summary": ProfileSummary, "dropped": n}
          {"type": "cleared"}
Requests: {"type": "sync"}                      -> {"type": "profiles", "items": [ProfileSummary], ...}
          {"type": "get_profile", "id": ID}      -> {"type": "profile", ...render/panel.py's payload}
          {"type": "compare", "a": ID, "b": ID}  -> {"type": "comparison", ...}
          {"type": "export", "id": ID, "path": P} -> {"type": "exported", "path": absolute path}
          {"type": "try", "id": ID, "suggestion": SUGGESTION_ID}
                                                 -> {"type": "tried", "saving_bytes", "time_change", "headline",
                                                     "notes", "before", "after", "first", ...}
          {"type": "predict", "id": ID, "device": D, "batch": B, "seq_len": S, "capacity_bytes": C}
                                                 -> {"type": "predicted", "id", "prediction", "text"}
          {"type": "bokehjs"}                    -> {"type": "bokehjs_scripts", "version", "scripts"}
          {"type": "live", "on": true}           -> {"type": "live_state", "start", "samples", "warnings"}
                                                    then, while a profile runs, the pushes
                                                    {"type": "live_start"}, {"type": "live"} (~20 a
                                                    second) and {"type": "live_end", "profile_id"}
          failures                              -> {"type": "error", "message": "..."}

Each message is a dataclass of model/wire.py (the panel's types are generated
from them); requests are parsed with the codec, field by field.

Everything sent is data but BokehJS: the panel writes names as text and
embeds the bokeh json_items with BokehJS, refusing any JavaScript in them
that memprofile did not write. The one code it runs is the kernel's own
BokehJS ("bokehjs": the files of the kernel's bokeh installation, which
render/bokehjs.py reads), as bokeh's own notebook output does: only a
kernel's BokehJS draws its bokeh's documents, and the kernel runs the
user's code already. "try" re-runs the profiled cell, so the panel asks
the user first; the kernel never runs anything the panel has not asked for.
The live feed (capture/live.py) is sent only after a "live" request, from its
sender thread: comm.send there queues the message for ipykernel's IOPub thread,
so the running cell, which holds the shell channel, does not hold it up.
"predict" re-executes the cell on fake tensors (Profile.predict): no real
memory, no state changed; an unknown device or a bad batch is answered with
the ValueError's own message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memprofile.capture import live as live_feed
from memprofile.errors import ProfileFormatError
from memprofile.model.codec import decode, to_dict
from memprofile.model.profile import Profile
from memprofile.model.wire import (
    AddedMessage,
    BokehjsReply,
    BokehjsRequest,
    ClearedMessage,
    CompareRequest,
    ComparisonReply,
    ErrorReply,
    ExportedReply,
    ExportRequest,
    GetProfileRequest,
    HelloMessage,
    LiveReply,
    LiveRequest,
    LiveSample,
    LiveStartMessage,
    PredictedReply,
    PredictRequest,
    ProfileReply,
    ProfilesReply,
    Push,
    Reply,
    Request,
    SyncRequest,
    TriedReply,
    TryRequest,
    parse_request,
)
from memprofile.store import STORE, ProfileStore

TARGET = "memprofile"


class PanelComm:
    def __init__(self, store: ProfileStore | None = None) -> None:
        self.store = store if store is not None else STORE
        self._comm: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = threading.Lock()
        #: Removes the live feed's sink, while a frontend has asked for the feed (a "live"
        #: request; nothing is sent otherwise). Its lock: "live" runs on a subshell's thread.
        self._stop_live: Callable[[], None] | None = None
        self._live_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._comm is not None

    def open(self) -> None:
        """Open the comm (again: a second %load_ext replaces the first)."""
        from comm import create_comm

        from memprofile._version import __version__

        self.close()
        self._comm = create_comm(target_name=TARGET, data=to_dict(HelloMessage(version=__version__)))
        self._comm.on_msg(self._on_msg)
        self._comm.on_close(lambda _msg: self._closed())
        self._unsubscribe = self.store.subscribe(self._on_store)

    def close(self) -> None:
        self._live_off()
        comm, self._comm = self._comm, None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if comm is not None:
            try:
                comm.close()
            except Exception:  # the kernel may be shutting down
                pass

    def _closed(self) -> None:
        self._live_off()
        self._comm = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def send(self, message: Push | Reply) -> None:
        self.send_data(to_dict(message))

    def send_data(self, data: dict) -> None:
        """A message already a dict (the live feed's): sent as it is."""
        with self._lock:  # comm.send is not safe from two threads at once
            if self._comm is not None:
                self._comm.send(data)

    # -- pushes ----------------------------------------------------------------
    def _on_store(self, event: str, profile: Profile | None) -> None:
        from memprofile.render.bundle import summarise

        if event == "added" and profile is not None:
            self.send(AddedMessage(summary=summarise(profile), dropped=self.store.dropped))
        elif event == "cleared":
            self.send(ClearedMessage())

    # -- requests --------------------------------------------------------------
    def _on_msg(self, msg: dict) -> None:
        data = msg.get("content", {}).get("data", {}) or {}
        request_id = data.get("request_id")
        reply: Reply
        try:
            reply = self.reply(parse_request(data))
        except (KeyError, ProfileFormatError) as exc:  # no such profile, a malformed request: the message says it
            reply = ErrorReply(message=str(exc.args[0]) if exc.args else "not found")
        except Exception as exc:  # the panel shows it; the kernel carries on
            reply = ErrorReply(message=f"{type(exc).__name__}: {exc}")
        reply.request_id = request_id
        self.send(reply)

    def reply(self, request: Request) -> Reply:
        if isinstance(request, SyncRequest):
            from memprofile.render.bundle import summarise

            return ProfilesReply(
                items=[summarise(p) for p in self.store.all()], dropped=self.store.dropped, capacity=self.store.capacity
            )
        if isinstance(request, GetProfileRequest):
            from memprofile.render.panel import panel_profile

            return ProfileReply(**vars(panel_profile(self._profile(request.id))))
        if isinstance(request, CompareRequest):
            from memprofile.analysis.compare import compare
            from memprofile.render.panel import panel_comparison

            comparison = panel_comparison(compare(self._profile(request.a), self._profile(request.b)))
            return ComparisonReply(**vars(comparison))
        if isinstance(request, ExportRequest):
            profile = self._profile(request.id)
            path = Path(request.path or f"{_file_name(profile.name)}.memprofile.html").expanduser()
            if path.suffix.lower() not in (".html", ".htm"):
                raise ValueError(f"the report is HTML: {path} should end in .html")
            return ExportedReply(path=str(profile.save_html(path).resolve()))
        if isinstance(request, BokehjsRequest):
            import bokeh

            from memprofile.render.bokehjs import bokehjs_scripts

            return BokehjsReply(version=bokeh.__version__, scripts=bokehjs_scripts())
        if isinstance(request, PredictRequest):
            return self._predict(request)
        if isinstance(request, LiveRequest):
            return self._live(request)
        return self._try(request)

    def _live(self, request: LiveRequest) -> LiveReply:
        """The live feed on or off; the running cell's feed so far (a reloaded page resumes)."""
        if request.on:
            with self._live_lock:
                if self._stop_live is None:
                    self._stop_live = live_feed.add_sink(self.send_data)
        else:
            self._live_off()
        feed = live_feed.current()
        if feed is None or not request.on:
            return LiveReply()
        return LiveReply(
            start=decode(LiveStartMessage, dict(feed.start), "live_start"),
            samples=[decode(LiveSample, s, "live sample") for s in list(feed.samples)],
            warnings=list(feed.warnings),
        )

    def _live_off(self) -> None:
        with self._live_lock:
            stop, self._stop_live = self._stop_live, None
        if stop is not None:
            stop()

    def _profile(self, key: str) -> Profile:
        if not key:
            raise KeyError("the request names no profile id")
        return self.store.get(key)

    def _predict(self, request: PredictRequest) -> PredictedReply | ErrorReply:
        from memprofile.render.prediction import prediction_text

        profile = self._profile(request.id)
        if request.capacity_bytes is None and not request.device:
            return ErrorReply(message="choose a device, or give its capacity")
        try:
            made = profile.predict(
                request.device or "custom",
                batch=request.batch,
                seq_len=request.seq_len,
                capacity_bytes=request.capacity_bytes,
            )
        except ValueError as exc:  # an unknown device, a bad batch: its message says what is known
            return ErrorReply(message=str(exc))
        return PredictedReply(id=profile.id, prediction=made, text=prediction_text(made))

    def _try(self, request: TryRequest) -> TriedReply:
        from memprofile.jupyter.magic import try_in_kernel
        from memprofile.render.compare import measured_line

        profile = self._profile(request.id)
        suggestion = next((s for s in profile.suggestions if s.id == request.suggestion), None)
        if suggestion is None or not suggestion.try_change:
            raise ValueError(f"{request.suggestion!r} cannot be tried in place for this profile")
        trial = try_in_kernel(profile, suggestion.try_change)
        c = trial.comparison
        return TriedReply(
            id=profile.id,
            suggestion=suggestion.id,
            change=trial.change,
            saving_bytes=trial.saving_bytes,
            time_change=trial.time_change,
            peak_before_bytes=c.peak.before,
            peak_change_percent=c.peak_change_percent,
            # the panel shows this line as it is: the figures and which runs they compare
            headline=measured_line(c),
            notes=list(c.notes),
            before=trial.before.id,
            after=trial.after.id,
            first=trial.first.id if trial.first else None,
            created=trial.created,
        )


def _file_name(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_")
    return safe or "profile"


PANEL = PanelComm()
