"""Start the collectors, run something, stop them, and keep the Profile.

`Profiler` is what `memprofile.profile()` returns and what the magic drives:
start() -> stop(error) -> Profile. Stopping always stops every collector, even
when one of them fails, so no sampler or framework profiler is left running.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import os
import platform
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from memprofile import kept_modules
from memprofile._version import __version__
from memprofile.analysis.analyse import analyse
from memprofile.analysis.build import build_profile
from memprofile.analysis.lines import assign_lines
from memprofile.analysis.replay import replay
from memprofile.analysis.step_table import step_table
from memprofile.capture import forked, lines, live, session
from memprofile.capture.base import DETAIL_STEPS, Collector, DetailWindow, RawCapture, create_collector
from memprofile.capture.distributed import BackendWatch, rank_from_env, stamp
from memprofile.capture.host import available_memory, check_interval, release_free_memory
from memprofile.capture.torch import MIN_BUDGET_BYTES
from memprofile.errors import CaptureError
from memprofile.model.profile import ErrorInfo, Note, Profile, RankInfo
from memprofile.python_source import read_python_source
from memprofile.storage import Url, as_target
from memprofile.units import fmt_bytes

if TYPE_CHECKING:
    from memprofile.whatif.call import Rerun

_FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "numpy")

#: Collectors a profile may start while another profile owns the framework
#: capture (capture/session.py): they keep no process-wide state of their own.
_NESTABLE = ("host", "namespace")


class CallerNamespace(Mapping):
    """A function's locals over the live globals, read at each access, so
    names bound inside a profiled block are seen at its end (a copy made at
    the start would miss them)."""

    def __init__(self, frame: FrameType) -> None:
        self._frame = frame

    def _maps(self) -> tuple[Mapping, Mapping]:
        return self._frame.f_locals, self._frame.f_globals  # f_locals: refreshed on each read

    def __getitem__(self, key: str):
        for m in self._maps():
            if key in m:
                return m[key]
        raise KeyError(key)

    def __iter__(self):
        local, glob = self._maps()
        yield from local
        yield from (k for k in glob if k not in local)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def caller_namespace(namespace: Mapping | None = None, depth: int = 1) -> Mapping:
    """`namespace` when one is given, else where a profile looks for the
    user's objects when the function asking was called from the user's code
    (`depth` frames up: 1, its caller): at module level that frame's globals
    themselves (the live dict), in a function its locals over its globals.
    The one way every entry point (profile(), try_change(), Profiler,
    run_trial) finds the caller's namespace."""
    if namespace is not None:
        return namespace
    frame = sys._getframe(depth + 1)
    if frame.f_locals is frame.f_globals:
        return frame.f_globals
    return CallerNamespace(frame)


#: Modules of the user's read to see which frameworks code imports through them.
MAX_LOCAL_IMPORTS = 20


def local_import_sources(source: str) -> list[str]:
    """The sources of the modules `source` imports that are the user's own (a
    .py file outside the installed packages and the standard library), not
    imported yet; one level, at most MAX_LOCAL_IMPORTS. Finding a module does
    not import it."""
    import ast
    import sysconfig

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".")[0])
    installed = tuple(str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "purelib", "platlib"))
    found: list[str] = []
    for name in dict.fromkeys(names):
        if name in sys.modules or name == "memprofile" or len(found) >= MAX_LOCAL_IMPORTS:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        origin = spec.origin if spec is not None else None
        if not origin or not origin.endswith(".py") or str(Path(origin).resolve()).startswith(installed):
            continue
        try:
            found.append(read_python_source(origin))
        except (OSError, SyntaxError):
            continue
    return found


def loaded_frameworks() -> dict[str, str]:
    """Versions of the frameworks the process has imported (never imports one)."""
    found = {}
    for name in _FRAMEWORK_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "unknown"))
    return found


def _recorded(captures: Sequence[RawCapture]) -> set[str]:
    """The collectors that saw the run do work (an op, or an allocation made in it)."""
    return {c.collector for c in captures if c.ops or any(not all(log.pre_existing) for log in c.allocations)}


#: Allocation rows beyond which kernels' buffers are not learned (about a second of sorting).
MAX_LEARNED_ROWS = 500_000


def _kernel_workspaces(captures: Sequence[RawCapture]) -> dict[str, float]:
    """Kernels' own buffers in the torch run, for the what-if engine's fake runs."""
    logs = [log for c in captures if c.collector == "torch" for log in c.allocations]
    if not logs or sum(len(log) for log in logs) > MAX_LEARNED_ROWS:  # a long detail: not worth its time
        return {}
    from memprofile.whatif.workspaces import learn

    return learn(logs)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip memprofile's own frames at the top of a traceback (the magic, the runner)."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("memprofile."):
        tb = tb.tb_next
    return tb


def error_info(exc: BaseException, captures: Sequence[RawCapture] = ()) -> ErrorInfo:
    """The exception, and where the framework was when it was raised: the last
    op that started (the one that failed, for an out-of-memory error) and its
    layer, and the bytes an out-of-memory message says were asked for."""
    from memprofile.capture.failure import headline, layer_of_op, stack_frames
    from memprofile.capture.tensorflow import oom_facts
    from memprofile.capture.torch.cuda import requested_bytes

    lines = traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__))
    info = ErrorInfo(type=type(exc).__qualname__, message=str(exc), traceback="".join(lines))
    last = next((c.last_op for c in reversed(captures) if c.last_op), {})
    info.op = last.get("op") or None
    info.layer = last.get("layer") or None
    info.requested_bytes = requested_bytes(info.message)
    # TensorFlow names the op (and the tensor's shape) in the message itself.
    tf_op, tf_requested = oom_facts(info.message)
    if tf_op and type(exc).__module__.startswith("tensorflow"):
        info.op = tf_op
        info.layer = None if last.get("op") != tf_op else info.layer
    if info.requested_bytes is None:
        info.requested_bytes = tf_requested
    if info.op and not info.layer and "/" in info.op:  # a TF op's scope names its layer
        info.layer = layer_of_op(info.op, [m for c in captures if c.collector == "tensorflow" for m in c.modules])
    info.headline = headline(info.message)
    info.message_frames = stack_frames(info.message)
    return info


#: The profiler's own memory budget: at most this, and at most this share of
#: the memory available when the run starts.
MAX_BUDGET_BYTES = 1 << 30
BUDGET_SHARE = 0.10


def default_budget() -> int:
    available = available_memory()
    budget = min(MAX_BUDGET_BYTES, int(BUDGET_SHARE * available)) if available else MAX_BUDGET_BYTES
    return max(budget, MIN_BUDGET_BYTES)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_capacity(text: str) -> int:
    """--capacity: 16G, 512M, 1.5GiB, 1000000 -> bytes (binary units, as --budget), above 0."""
    m = _SIZE.match(text)
    size = int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())) if m else 0
    if size <= 0:
        raise ValueError(f"--capacity takes a size such as 16G or 512M, got {text!r}")
    return size


def parse_budget(text: str) -> int:
    """--budget: 512M, 2G, 1.5GiB, 1000000 -> bytes (binary units), at least MIN_BUDGET_BYTES."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"--budget takes a size such as 512M or 2G, got {text!r}")
    size = int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))
    if size < MIN_BUDGET_BYTES:
        raise ValueError(
            f"--budget must be at least {MIN_BUDGET_BYTES >> 20}M (torch's profiler alone takes "
            f"~160 MB to start and stop), got {text!r}"
        )
    return size


class Profiler:
    """Profile a block of code.

    ``with memprofile.profile(name="step") as p:`` gives ``p``, a Profile that
    is filled in when the block ends (also when it raises).

    One profile at a time owns the framework capture of the process
    (capture/session.py): torch's profiler cannot run twice at once (two
    threads segfault; a nested one ends the outer's session). A profile that
    starts while another owns it, nested in it or in another thread, records
    process memory only (host, and what the namespace keeps), with a note
    naming the owner; the owner's profile notes when and where it ran. It
    runs rather than raises, so that a helper that profiles itself still
    works when called from a profiled cell, and the outer profile stays right.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        source: str = "",
        host_interval_s: float = 0.005,
        reset_os_peak: bool = True,
        torch: bool | None = None,
        tensorflow: bool | None = None,
        tf_max_events: int | None = None,
        record_shapes: bool = True,
        with_stack: bool = False,
        cuda_history: bool = False,
        namespace: Mapping | None = None,
        store: bool = True,
        cell_lines: bool = False,
        detail_steps: DetailWindow | int | tuple[int, int | None] | None = DETAIL_STEPS,
        budget_bytes: int | None = None,
        capacity_bytes: int | None = None,
        out: str | Path | Url | None = None,
        script: str | None = None,
        whatif: bool = True,
        rerun_source: str | None = None,
        rerun: Rerun | str | None = None,
        whatif_memo: dict | None = None,
        feed_live: bool = True,
    ) -> None:
        """`torch=None` profiles PyTorch when it is imported (or the source
        mentions it), `tensorflow=None` likewise TensorFlow; `namespace` is
        where tensors from before the run are looked for (the notebook's
        globals; the caller's by default); `cell_lines`: the code run was
        compiled with capture.lines.instrument, so allocations get its lines;
        `detail_steps`: training steps recorded in full detail: the first N,
        a window (first, last) of 1-based steps, or None: all;
        `budget_bytes`: the profiler's own memory budget (default: 1 GiB or a
        tenth of the memory available at the start, whichever is smaller);
        `capacity_bytes`: the memory the run may use on its peak device (its
        first framework allocator, else the host), for the live feed's warnings
        (capture/live.py) instead of the device's own;
        `out`: a folder to save the profile in when it stops, or an fsspec
        URL (s3://bucket/job/; storage.py) (a rank of a
        distributed job saves NAME.rankR.memprofile.json.gz there, by
        default in ./memprofile-<run id>/; `saved_path` says where);
        `script`: the script this profile runs whole (memprofile run): the
        process ends after it, so no advice about what a notebook keeps;
        `whatif`: re-execute the cell's first steps on fake tensors after it, with
        each suggestion's code, for measured estimates (whatif/estimate.py); a
        script is never re-executed (it may read its data again); `rerun_source`:
        the code a `with profile():` block runs (whatif/block.py), re-executed for
        predictions and estimates where there is no cell source; `rerun`: the same for a
        `@profiled` call or a block in a function (whatif/call.py), or why it has none;
        `whatif_memo`: that code site's estimates by the shapes it ran with (whatif/estimate.py);
        `feed_live`: feed the
        live view while it runs (capture/live.py; a trial's runs do not)."""
        check_interval(host_interval_s)  # said here, not by a thread that dies
        self.name = name or "profile"
        self.source = source
        self._rerun_source = rerun_source
        self._rerun = rerun
        self._whatif_memo = whatif_memo
        self._feed_live = feed_live
        self.store = store
        namespace = caller_namespace(namespace)
        self._namespace = namespace
        self._whatif = whatif and script is None
        self._wanted = {"torch": torch, "tensorflow": tensorflow}
        self._collector_options: dict[str, dict] = {
            "host": {"interval_s": host_interval_s, "reset_os_peak": reset_os_peak},
            "namespace": {"namespace": namespace},
            "torch": {
                "record_shapes": record_shapes,
                "with_stack": with_stack,
                "cuda_history": cuda_history,
                "namespace": namespace,
                "detail_steps": DetailWindow.of(detail_steps),
                "reset_peak": reset_os_peak,
            },
            "tensorflow": {
                "namespace": namespace,
                "reset_peak": reset_os_peak,
                "detail_steps": detail_steps,
                **({"max_events": tf_max_events} if tf_max_events else {}),
            },
        }
        self._budget = budget_bytes
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be above 0, got {capacity_bytes!r}")
        self._capacity = capacity_bytes
        self._feed: live.LiveFeed | None = None  # the outermost profile's live feed
        if cell_lines:  # last: it starts right before the cell and stops first
            self._collector_options["lines"] = {}
        self._collectors: list[Collector] = []
        self._start_notes: list[Note] = []
        self._started_at = ""
        self._t0 = 0.0
        self._running = False
        self._owner: session.Owner | None = None  # this profile owns the framework capture
        self._inner: session.Inner | None = None  # another profile owns it; this one runs inside
        self._nested_in = ""
        self._out = as_target(out) if out is not None else None  # a folder, or a URL (s3://bucket/job/)
        self._script = script
        self._rank: RankInfo | None = None
        self._backend = BackendWatch()
        self._pid = os.getpid()  # the process that started it; a forked child is not it
        self.saved_path: Path | Url | None = None
        self.profile: Profile | None = None

    @property
    def running(self) -> bool:
        return self._running

    # A process forked while this profile ran --------------------------------
    @property
    def forked_off(self) -> bool:
        """True in a child forked (os.fork) while this profile ran: the
        profile is its parent's. The child does not stop it: its collectors'
        threads are not in the child, torch's profiler is the parent's to
        stop, and the file is the parent's to write."""
        return self._running and os.getpid() != self._pid

    def _forked_profile(self) -> Profile:
        """What stop() gives in a forked child: an empty profile that says
        why, neither stored nor saved; the child runs on as it would bare."""
        self._collectors = []
        self._running = False
        note = Note(
            "forked_child",
            f"this process (pid {os.getpid()}) was forked from the one that ran this "
            f"profile (pid {self._pid}) while it ran: the profile is that process's, "
            f"and is written there; nothing was recorded here",
        )
        return Profile(id="", name=self.name, started_at=self._started_at, duration_s=0.0, warnings=[note])

    def start(self) -> None:
        kept_modules.restore()  # before any lazy import: a user may have deleted memprofile's modules
        if self._running:
            raise CaptureError("this Profiler is already running; stop() it first")
        self._pid = os.getpid()
        owns, owner = session.claim(self.name)
        self._owner, self._inner = (owner, None) if owns else (None, session.enter_inner(owner, self.name))
        try:
            self._start(owns, owner)
        except BaseException:  # an interrupt while starting: leave nothing running
            self._abandon()
            raise
        if any(c.name == "torch" for c in self._collectors):
            forked.guard_forked_exits()

    def _abandon(self) -> None:
        for collector in reversed(self._collectors):
            try:
                collector.stop()
            except BaseException:  # stopping is all that matters here
                pass
        self._collectors = []
        self._backend.stop()
        self._leave_session()
        self._end_feed(None)

    def _start(self, owns: bool, owner: session.Owner) -> None:
        budget = self._budget if self._budget is not None else default_budget()
        self._collector_options["torch"]["budget_bytes"] = budget
        self._collector_options["tensorflow"]["budget_bytes"] = budget
        self._budget_text = fmt_bytes(budget)
        self._budget_bytes = budget
        self._start_notes = []
        self._rank = rank_from_env()
        if self._rank is not None:
            self._backend.start()
        if owns and self._feed_live:  # only the outermost run feeds; its host sampler builds the samples
            self._feed = live.start_run(self.name, budget, self._capacity)
        if not owns:
            self._nested_in = owner.describe()
            self._start_notes.append(Note("nested_profile", _nested_message(owner)))
        names = [n for n in self._collector_options if self._wants(n) and (owns or n in _NESTABLE)]
        collectors = [create_collector(n, **self._collector_options[n]) for n in names]
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._t0 = time.perf_counter()
        if owns:
            owner.origin = self._t0  # inner profiles' times are this profile's
        started: list[Collector] = []
        self._collectors = started  # what stop() must stop, even if an interrupt lands in a start
        for collector in collectors:
            try:
                collector.start(self._t0)
            except Exception as exc:  # profile with what works; never fail the user's code
                self._start_notes.append(
                    Note("collector_failed", f"the {collector.name} collector could not start: {exc!r}")
                )
                continue
            started.append(collector)
        if not any(c.name in ("torch", "tensorflow") for c in started):
            lines.go_fast()  # no framework records events: the lines' times place nothing
        self._running = True

    def _wants(self, collector: str) -> bool:
        if collector not in self._wanted:
            return True
        if self._wanted[collector] is not None:
            return bool(self._wanted[collector])
        module = collector
        if module in sys.modules:
            return True
        # A cell or script that imports the framework itself, or a module of the user's that does
        # (`import keeploops`, whose first line imports torch): profile it if it is installed.
        mentions = ("tensorflow", "keras") if module == "tensorflow" else (module,)
        text = self.source + "".join(local_import_sources(self.source))
        return any(m in text for m in mentions) and importlib.util.find_spec(module) is not None

    def stop(self, error: BaseException | None = None, output: tuple[int, object] | None = None) -> Profile:
        """Stop every collector and build the profile; `error` is what the run
        raised; `output` is (execution count, value) of a result the notebook
        is about to cache as Out[count], which the namespace scan cannot see yet.
        An interrupt (Ctrl-C, the kernel's interrupt) that comes while it stops
        waits until the profile is stored, then is raised."""
        if self.forked_off:
            return self._forked_profile()
        kept_modules.restore()  # the profiled code may have deleted memprofile's modules
        with _interrupts_deferred() as interrupted:
            for c in self._collectors:
                if output is not None and hasattr(c, "expect_output"):
                    c.expect_output(*output)
            try:
                profile = self._finish(error, interrupted)
            except BaseException:
                self._end_feed(None)  # no profile: the feed's run ends all the same
                raise
            return self._keep(profile)

    def _keep(self, profile: Profile) -> Profile:
        if self.store:
            from memprofile.store import STORE

            STORE.add(profile)
        self._save(profile)
        self._end_feed(profile.id if self.store else None)
        return profile

    def _end_feed(self, profile_id: str | None) -> None:
        """The live feed's end, after the profile is stored (its id)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            live.end_run(feed, profile_id)

    def _save(self, profile: Profile) -> None:
        """Save it where `out` says (a rank: its rank file, by default in
        the job's folder). A profile that cannot be written is said on
        stderr: the user's run goes on."""
        from memprofile import rank_files
        from memprofile.errors import MemprofileError

        info = profile.distributed
        # A rank saves what its user profiled; a trial's inner runs (store=False) only where told to.
        if self._out is None and (info is None or not self.store):
            return
        folder = self._out if self._out is not None else rank_files.default_dir(info)
        path = (
            rank_files.rank_path(folder, self.name, info.rank)
            if info is not None
            else rank_files.single_path(folder, self.name)
        )
        try:
            if isinstance(folder, Path):  # an object store has no folders to make
                folder.mkdir(parents=True, exist_ok=True)  # every rank may create it: exist_ok
            self.saved_path = profile.save(path)
        except (MemprofileError, OSError) as exc:
            who = f"rank {info.rank}: " if info is not None else ""
            print(f"memprofile: {who}cannot save the profile {self.name!r} to {path}: {exc}", file=sys.stderr)
            if isinstance(path, Url):  # a store that fails at the end of a long run (expired credentials)
                local = (rank_files.default_dir(info) if info is not None else Path(".")).absolute() / path.name
                try:  # keeps the profile on this machine, to copy there later
                    local.parent.mkdir(parents=True, exist_ok=True)
                    self.saved_path = profile.save(local)
                    print(f"memprofile: {who}saved it on this machine instead: {local}", file=sys.stderr)
                except (MemprofileError, OSError) as again:
                    print(f"memprofile: {who}nor on this machine ({local}): {again}", file=sys.stderr)

    def _finish(self, error: BaseException | None, interrupted: list[bool] | None = None) -> Profile:
        if not self._running:
            raise CaptureError("this Profiler is not running; start() it first")
        # Turning events into a Profile makes many small objects; in a process
        # holding a framework's millions of objects the cyclic GC's passes
        # over them cost ~10 % of it, for nothing: it makes no cycles.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            profile = self._collect(error)
        finally:
            if gc_was_enabled:
                gc.enable()
        if interrupted:
            profile.warnings.append(
                Note(
                    "interrupted_while_stopping",
                    (
                        "the run was interrupted while the profile was stopping: the profile was finished and "
                        "stored first, then the interrupt was raised"
                    ),
                )
            )
        return profile

    def _stop_collectors(self, notes: list[Note]) -> list[RawCapture]:
        """Stop every collector, whatever happens in one of them, and give
        back the framework capture; an interrupt that reached one of them
        (off the main thread nothing defers it) is raised after the rest stopped."""
        captures: list[RawCapture] = []
        interrupt: BaseException | None = None
        try:
            if self._feed is not None:
                try:
                    self._feed.stopping()
                except Exception:  # the live feed's last reading never costs the collectors' stop
                    pass
            for c in reversed(self._collectors):
                try:
                    captures.append(c.stop())
                except Exception as exc:  # one broken collector must not lose the others
                    notes.append(Note("collector_failed", f"the {c.name} collector failed to stop: {exc!r}"))
                except BaseException as exc:
                    interrupt = interrupt or exc
        finally:
            self._collectors = []
            self._running = False
            self._leave_session()
            self._backend.stop()
        if interrupt is not None:
            raise interrupt
        captures.reverse()
        return captures

    def _leave_session(self) -> None:
        if self._inner is not None:
            session.leave_inner(self._inner)
        if self._owner is not None:
            session.release(self._owner)  # (idempotent: kept to name the inner profiles)

    def _collect(self, error: BaseException | None) -> Profile:
        notes: list[Note] = list(self._start_notes)
        captures = self._stop_collectors(notes)
        # Wall time of the run including the collectors' own start and stop, so
        # every timeline sample lies within [0, duration].
        duration = time.perf_counter() - self._t0
        if self._owner is not None:
            notes.extend(Note("inner_profile", line) for line in session.inner_runs(self._owner))
        marks = next((c.line_marks for c in captures if c.line_marks[0]), ((), ()))
        for c in captures:
            for log in c.allocations:
                assign_lines(log, marks)
        replays = [replay(log) for c in captures for log in c.allocations]
        failure = error_info(error, captures) if error is not None else None
        if failure is not None and error is not None and "lines" in self._collector_options:
            # the line running when it raised: its frame's, in the traceback (a loop running
            # unmarked records no line), else the last line marked
            failure.line = lines.error_line(error) or (marks[1][-1] if marks[1] else None)
        profile = build_profile(
            captures,
            replays=replays,
            name=self.name,
            started_at=self._started_at,
            duration_s=duration,
            source=self.source,
            error=failure,
            notes=notes,
            frameworks=loaded_frameworks(),
            environment={"python": platform.python_version(), "memprofile": __version__},
        )
        profile.capture["budget"] = self._budget_text
        if self._script:
            profile.capture["script"] = self._script
        profile.capture["budget_bytes"] = str(self._budget_bytes)
        if self._inner is not None:
            profile.capture["nested_in"] = self._nested_in
        if self._rank is not None:
            profile.distributed = stamp(self._rank, self._t0, self._backend.backend)
        profile.steps = step_table(captures, profile)
        profile = analyse(profile)
        rerun = self.source or self._rerun_source or (self._rerun is not None and not isinstance(self._rerun, str))
        self._workspaces = _kernel_workspaces(captures) if rerun and not self._script else {}
        self._keep_step_source(profile, _recorded(captures))
        del captures, replays
        release_free_memory()
        return profile

    def _keep_step_source(self, profile: Profile, recorded: set[str]) -> None:
        """Keep what re-executes the run (`_keep_rerun`), then measure the suggestions'
        estimates with it; where it cannot, each estimate says it is its rule's replay, and why."""
        why = self._keep_rerun(profile, recorded)
        if not profile.suggestions:
            return
        if why is None and profile.error is not None:
            why = "the run raised"
        elif why is None and not self._whatif:
            why = "the what-if engine was off for this run (whatif=False, --no-whatif)"
        from memprofile.whatif.estimate import estimate_suggestions

        estimate_suggestions(profile, unrun=why, memo=self._whatif_memo)

    def _keep_rerun(self, profile: Profile, recorded: set[str]) -> str | None:
        """What re-executes the run for predictions (whatif/): the cell's code and the
        notebook's (or script's) globals, which live on anyway; never a function's
        locals, which the profile would keep alive (a call's or a block's are held weakly,
        whatif/call.py). Only a run that did torch work and no TensorFlow work: re-executed,
        TensorFlow's ops would run for real. A run that did TensorFlow work keeps the same names
        for the Keras prediction, which re-executes nothing. None, or why it keeps nothing."""
        namespace = self._namespace
        main = isinstance(namespace, dict) and namespace.get("__name__") == "__main__"
        source = self.source or self._rerun_source
        bindings = None
        if isinstance(self._rerun, str):
            profile._no_rerun = self._rerun  # type: ignore[attr-defined]
            return f"its code cannot run again ({self._rerun})"
        if self._rerun is not None and not source:
            # a call or a function's block: its module's globals (they live on), its values weakly
            source, namespace, bindings, main = self._rerun.source, self._rerun.globals, self._rerun.bindings, True
        if self._script:
            return "a script is never re-executed (it may read its data or write its files again)"
        if not source or not main:
            return "its code is not at hand (a run outside a notebook)"
        if any(name.startswith("tensorflow") for name in recorded):
            # A Keras prediction reads the cell's models and optimizers; it runs nothing again.
            from memprofile.analysis.predict.keras import KerasSource

            if bindings is not None:  # a call's or a block's: its values read when asked, held weakly
                from memprofile.whatif.call import BoundNamespace

                namespace = BoundNamespace(namespace, bindings)
            profile._keras_source = KerasSource(source, namespace, steps=len(profile.steps))  # type: ignore[attr-defined]
            return "a TensorFlow run is not re-executed"
        if "torch" not in recorded:
            return "it ran no PyTorch work"
        from memprofile.whatif.engine import StepSource

        profile._step_source = StepSource(  # type: ignore[attr-defined]
            source, namespace, steps=len(profile.steps), workspaces=self._workspaces, bindings=bindings
        )
        return None

    # Context manager: the Profile handed out at entry is filled in at exit.
    def __enter__(self) -> Profile:
        self.start()
        self.profile = Profile(id="", name=self.name, started_at=self._started_at, duration_s=0.0)
        return self.profile

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.forked_off:
            if self.profile is not None:
                self.profile.warnings.extend(self._forked_profile().warnings)
            return
        with _interrupts_deferred() as interrupted:
            try:
                result = self._finish(exc, interrupted)
            except BaseException:
                self._end_feed(None)  # no profile: the feed's run ends all the same
                raise
            assert self.profile is not None
            for f in dataclasses.fields(result):
                setattr(self.profile, f.name, getattr(result, f.name))
            for kept in ("_step_source", "_keras_source", "_fake_bases", "_no_rerun"):  # what predictions re-execute
                if kept in result.__dict__:
                    setattr(self.profile, kept, result.__dict__[kept])
            self._keep(self.profile)  # the store holds the very object the user holds


def _nested_message(owner: session.Owner) -> str:
    return (
        f"{owner.describe()} was already profiling when this one started: torch's and TensorFlow's "
        f"profilers run once per process, so this profile recorded process memory only (host) and "
        f"no framework ops or layers; profile outside {owner.name!r} for those"
    )


@contextmanager
def _interrupts_deferred() -> Iterator[list[bool]]:
    """Hold SIGINT (Ctrl-C; the IPython kernel's interrupt) while the block
    runs, so that stopping is never cut in half (a framework profiler half
    stopped, a sampler thread left running, nothing stored); the list says
    whether one came. It is raised when the block ends. Signal handlers can
    only be set in the main thread: elsewhere nothing is deferred."""
    came: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored or the OS default: nothing to defer
        yield came
        return

    def hold(signum, frame) -> None:
        came.append(True)

    try:
        signal.signal(signal.SIGINT, hold)
    except ValueError:  # not the main interpreter: signals cannot be handled here
        yield came
        return
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        if previous is signal.default_int_handler:
            raise KeyboardInterrupt
        previous(signal.SIGINT, None)
