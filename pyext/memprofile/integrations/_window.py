"""Steps A-B of a framework's training run under one Profiler: what the three
callbacks share. A callback says when a step begins (the 1-based number of the
step about to run) and when steps end (how many the run has done); the window
starts the profile at its first step's beginning and stops it at its last step's
end, and saves it where `out` says (as `memprofile run` names its files).

Nothing here imports a framework: each callback's module imports its own.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from memprofile.capture import session
from memprofile.capture.distributed import rank_from_env
from memprofile.model.profile import Profile
from memprofile.profiler import Profiler

#: The steps profiled by default: the first (it creates the optimizer's state), and two more.
DEFAULT_STEPS = (1, 3)

#: Names of a file rather than a folder for `out`.
FILE_SUFFIXES = (".json", ".json.gz", ".html", ".htm")

Steps = int | str | tuple[int, int] | list[int]


def parse_steps(steps: Steps) -> tuple[int, int]:
    """(first, last) 1-based steps, from 3, "2-5", "4" or (2, 5)."""
    first: Any
    last: Any
    if isinstance(steps, str):
        text = steps.strip()
        first, dash, last = text.partition("-")
        try:
            first, last = int(first), int(last if dash else first)
        except ValueError:
            first = last = None
    elif isinstance(steps, int) and not isinstance(steps, bool):
        first = last = steps
    elif isinstance(steps, (tuple, list)) and len(steps) == 2:
        first, last = steps
    else:
        first = last = None
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in (first, last)) or not 1 <= first <= last:
        raise ValueError(
            f"steps takes the training steps to profile, 1-based: (first, last) such as (1, 3), "
            f"'2-5', or one step such as 4; got {steps!r}"
        )
    return first, last


def is_url(out: str) -> bool:
    return "://" in out


def default_name() -> str:
    """The script's name, as `memprofile run` names a profile; "train" where none runs (a notebook)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return script.name.removesuffix(".py") if script is not None and script.suffix == ".py" else "train"


def _check_out(out: str) -> None:
    """A local `out` that cannot be written is said now, not after the steps ran."""
    if is_url(out):
        return
    path = Path(os.path.abspath(out))
    if out.lower().endswith(FILE_SUFFIXES):
        if not path.parent.is_dir():
            raise ValueError(f"out={out!r}: the folder {path.parent} does not exist; create it or choose another path")
        return
    existing = next(p for p in (path, *path.parents) if p.exists())  # the root exists
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ValueError(f"out={out!r}: cannot make or write the folder there ({existing} is not a writable folder)")


class Terminated(Exception):
    """The process was sent SIGTERM in the window (a scheduler's preemption or time
    limit: SLURM sends it, then SIGKILL after its KillWait, 30 s by default)."""


class _WindowProfiler(Profiler):
    """A Profiler whose profile says which of the run's steps it holds, in the
    file it saves too (`capture["steps"]`, e.g. "1-3"; `capture["profiled_by"]`)."""

    stamp: dict[str, str] = {}

    def _collect(self, error: BaseException | None) -> Profile:
        profile = super()._collect(error)
        profile.capture.update(self.stamp)
        return profile


class StepWindow:
    """Profile steps first..last of each run (a `train()`/`fit()` call) with
    memprofile.profile()'s Profiler; `profile` is the newest profile, `profiles`
    all of them, `saved_path` where the newest was written (None: not written)."""

    def __init__(
        self,
        owner: str,
        steps: Steps = DEFAULT_STEPS,
        out: str | os.PathLike | None = None,
        name: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.owner = owner  # how messages name the callback
        self.first, self.last = parse_steps(steps)
        self.out = os.fspath(out) if out is not None else None
        self.to_file = self.out is not None and self.out.lower().endswith(FILE_SUFFIXES)
        rank = rank_from_env()
        if self.to_file and rank is not None:
            raise ValueError(
                f"out={self.out!r} names one file, but each rank of this job (rank {rank.rank} of "
                f"{rank.world_size}) writes its own: give a folder (e.g. out='profiles/'), then "
                f"`memprofile merge` it"
            )
        if self.out is not None:
            _check_out(self.out)
        self.name = name or default_name()
        self.options = dict(options or {})
        if "out" in self.options or "name" in self.options:
            raise TypeError(f"{owner}: give out= and name= as the callback's own arguments")
        self.options.setdefault("detail_steps", None)  # every step of the window in detail: the user chose it
        self.profile: Profile | None = None
        self.profiles: list[Profile] = []
        self.saved_path: Any = None  # a Path, or the URL (storage.py) the profile was written to
        self._profiler: _WindowProfiler | None = None
        self._started_at = 0  # the run's step the profile started at
        self._done = False  # this run's window is over (profiled, or not to be)
        self._said_busy = False
        self._ran: tuple[int, int] | None = None  # the first and last step this run began
        self._ended = 0  # steps this run has ended
        self._unhook: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return self._profiler is not None and self._profiler.running

    @property
    def profiler(self) -> _WindowProfiler | None:
        """The running Profiler, None outside the window."""
        return self._profiler if self.running else None

    # -- a run ----------------------------------------------------------------
    def run_begins(self) -> None:
        """A new run (train()/fit() call): its steps count from its own start. A
        window an earlier run left open (it raised where no hook saw it) ends first."""
        if self.running:
            self.finish(None)
        self._done = False
        self._ran = None
        self._ended = 0

    def step_begins(self, step: int, objects: Callable[[], Mapping[str, Any]] | None = None, span: int = 1) -> bool:
        """Step `step` (1-based) is about to run, and `span` steps in all before
        the framework calls back (Keras's steps_per_execution); True while the
        profile runs. `objects`: the framework's model and optimizer by name (read
        when the profile starts), for a script that keeps them in no global."""
        self._ran = (self._ran[0] if self._ran else step, step + span - 1)
        if self._profiler is None and not self._done and step <= self.last and step + span - 1 >= self.first:
            self._start(step, objects() if objects is not None else {})
        return self.running

    def steps_ended(self, done: int) -> None:
        """The run has ended `done` steps; the window's last one ends the profile."""
        self._ended = done
        if self.running and done >= self.last:
            self.finish(None)

    def run_ends(self) -> None:
        """The run ended (its last step, or stopped early): a window still open
        ends here; one the run never reached is said."""
        if self.running:
            self.finish(None)
            return
        if not self._done and self._ran is not None and not self._said_busy:
            ran = f"{self._ran[0]}-{self._ran[1]}" if self._ran[0] != self._ran[1] else str(self._ran[0])
            print(
                f"memprofile: {self.owner} profiled nothing: the run's steps were {ran}, "
                f"and steps {self.first}-{self.last} were asked for",
                file=sys.stderr,
            )
        self._done = True

    # -- the profile ----------------------------------------------------------
    def _start(self, step: int, objects: Mapping[str, Any]) -> None:
        self._done = True  # one window per run, whatever happens next
        owner = session.current()
        if owner is not None:
            if not self._said_busy:
                self._said_busy = True
                print(
                    f"memprofile: {self.owner} does not profile steps {self.first}-{self.last}: "
                    f"{owner.describe()} is already profiling this process, and its profile holds "
                    f"these steps (torch's and TensorFlow's profilers run once per process)",
                    file=sys.stderr,
                )
            return
        options = dict(self.options)
        options.setdefault("namespace", namespace(objects))
        out = None if self.to_file else self.out
        profiler = _WindowProfiler(name=self.name, out=out, **options)
        profiler.start()
        self._profiler = profiler
        self._started_at = step
        self._hook_errors()

    def finish(self, error: BaseException | None) -> Profile | None:
        """Stop the profile (with the exception the run raised, if any), keep
        and save it; None when none was running."""
        profiler, self._profiler = self._profiler, None
        self._unhook_errors()
        if profiler is None or not profiler.running:
            return None
        last = max(self._started_at, self._ended) if error is None else (self._ran or (0, 0))[1]
        profiler.stamp = {
            "steps": f"{self._started_at}-{last}" if last != self._started_at else str(last),
            "profiled_by": self.owner,
        }
        profile = profiler.stop(error)
        self.profile = profile
        self.profiles.append(profile)
        self.saved_path = self._save(profile, profiler)
        self._say(profile)
        return profile

    def _save(self, profile: Profile, profiler: Profiler) -> Any:
        if not self.to_file:
            return profiler.saved_path  # the Profiler wrote it (a folder, or a rank's default folder)
        assert self.out is not None
        from memprofile.errors import MemprofileError

        try:
            if self.out.lower().endswith((".html", ".htm")):
                return profile.save_html(self.out)
            return profile.save(self.out)
        except (MemprofileError, OSError) as exc:
            print(f"memprofile: cannot save the profile {self.name!r} to {self.out}: {exc}", file=sys.stderr)
            return None

    def _say(self, profile: Profile) -> None:
        from memprofile.render.text import one_line

        info = profile.distributed
        who = f"rank {info.rank}/{info.world_size}: " if info is not None else ""
        steps = profile.capture["steps"]
        where = f"; written to {self.saved_path}" if self.saved_path else ""
        print(f"memprofile: {who}steps {steps}: {one_line(profile)}{where}", file=sys.stderr)
        if info is not None and info.rank == 0 and self.saved_path:
            folder = str(self.saved_path).rsplit("/", 1)[0]
            print(f"memprofile: when every rank has finished: memprofile merge {folder}", file=sys.stderr)

    # -- a run that raises where the callback does not hear of it ---------------
    def _hook_errors(self) -> None:
        """Until the window ends, an exception that ends the script (or the
        notebook cell) ends the profile with it, kept and saved (an
        out-of-memory error at step 2 is what a cluster's user needs to see).
        A framework that tells its callbacks (Lightning) ends it first."""
        shell = _ipython()
        if shell is not None:

            def after_cell(result: Any) -> None:
                self.finish(getattr(result, "error_in_exec", None))

            shell.events.register("post_run_cell", after_cell)
            self._unhook.append(lambda: _unregister(shell, after_cell))
            return
        previous = sys.excepthook

        def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            self.finish(exc)
            previous(kind, exc, tb)

        def restore() -> None:
            if sys.excepthook is excepthook:
                sys.excepthook = previous

        sys.excepthook = excepthook
        at_exit = self._at_exit
        atexit.register(at_exit)
        self._unhook += [restore, lambda: atexit.unregister(at_exit)]
        self._hook_sigterm()

    def _hook_sigterm(self) -> None:
        """SIGTERM in the window (a cluster preempting the job) ends the profile,
        kept and saved, then does what it did without memprofile: the handler that
        was there runs (Lightning's, say), or the process ends by the signal."""
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signal handlers in the main thread only
        try:
            previous = signal.getsignal(signal.SIGTERM)
        except (AttributeError, ValueError):
            return
        if previous is None:
            return  # a handler not set from Python: it stays the one

        def on_term(signum: int, frame: Any) -> None:
            restore()
            try:
                self.finish(Terminated(f"signal {signum} (SIGTERM): the process was asked to end in the window"))
            finally:  # whatever saving did, the signal does what it did bare
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    os.kill(os.getpid(), signum)  # the default: the process ends by the signal

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) is on_term:
                signal.signal(signal.SIGTERM, previous)

        signal.signal(signal.SIGTERM, on_term)
        self._unhook.append(restore)

    def _at_exit(self) -> None:
        self.finish(None)  # sys.exit() in the window: what ran is kept and saved

    def _unhook_errors(self) -> None:
        unhook, self._unhook = self._unhook, []
        for undo in unhook:
            undo()


def namespace(objects: Mapping[str, Any]) -> dict[str, Any]:
    """Where the profile finds the user's models, optimizers and tensors: the
    script's (or notebook's) globals, and the framework's objects the callback
    was given, under their own name where the globals do not hold them (the
    globals' names win: they are the user's)."""
    main = sys.modules.get("__main__")
    found = dict(vars(main)) if main is not None else {}
    held = {id(v) for v in found.values()}
    for name, value in objects.items():
        if value is None or id(value) in held:
            continue
        key = name
        while key in found:
            key = f"_{key}"
        found[key] = value
    return found


def _ipython() -> Any:
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get() if get is not None else None


def _unregister(shell: Any, callback: Callable[[Any], None]) -> None:
    try:
        shell.events.unregister("post_run_cell", callback)
    except ValueError:  # already gone
        pass


class WindowResults:
    """What each framework's callback gives after its window: `profile` (the newest, also
    memprofile.last()), `profiles` (one per train()/fit() call) and `saved_path`."""

    window: StepWindow

    @property
    def profile(self) -> Profile | None:
        return self.window.profile

    @property
    def profiles(self) -> list[Profile]:
        return self.window.profiles

    @property
    def saved_path(self) -> Any:
        return self.window.saved_path
