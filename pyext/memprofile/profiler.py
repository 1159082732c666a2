"""Start the collectors, run something, stop them, and keep the Profile.

`Profiler` is what `memprofile.profile()` returns and what the magic drives:
start() -> stop(error) -> Profile. Stopping always stops every collector, even
when one of them fails, so no sampler or framework profiler is left running.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from types import TracebackType

from memprofile._version import __version__
from memprofile.analysis.peak import analyse
from memprofile.capture.base import Collector, RawCapture, create_collector
from memprofile.errors import CaptureError
from memprofile.model.build import build_profile
from memprofile.model.profile import ErrorInfo, Note, Profile


_FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "numpy")


def loaded_frameworks() -> dict[str, str]:
    """Versions of the frameworks the process has imported (never imports one)."""
    found = {}
    for name in _FRAMEWORK_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "unknown"))
    return found


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip memprofile's own frames at the top of a traceback (the magic, the runner)."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("memprofile."):
        tb = tb.tb_next
    return tb


def error_info(exc: BaseException) -> ErrorInfo:
    lines = traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__))
    return ErrorInfo(type=type(exc).__qualname__, message=str(exc), traceback="".join(lines))


class Profiler:
    """Profile a block of code.

    ``with memprofile.profile(name="step") as p:`` gives ``p``, a Profile that
    is filled in when the block ends (also when it raises).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        source: str = "",
        host_interval_s: float = 0.005,
        reset_os_peak: bool = True,
        store: bool = True,
    ) -> None:
        self.name = name or "profile"
        self.source = source
        self.store = store
        self._collector_options = {
            "host": {"interval_s": host_interval_s, "reset_os_peak": reset_os_peak},
        }
        self._collectors: list[Collector] = []
        self._started_at = ""
        self._t0 = 0.0
        self._running = False
        self.profile: Profile | None = None

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if self._running:
            raise CaptureError("this Profiler is already running; stop() it first")
        collectors = [create_collector(n, **o) for n, o in self._collector_options.items()]
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._t0 = time.perf_counter()
        started: list[Collector] = []
        try:
            for c in collectors:
                c.start(self._t0)
                started.append(c)
        except Exception as exc:
            for c in reversed(started):
                try:
                    c.stop()
                except Exception:
                    pass
            raise CaptureError(f"could not start the {c.name} collector: {exc}") from exc
        self._collectors = started
        self._running = True

    def stop(self, error: BaseException | None = None) -> Profile:
        """Stop every collector and build the profile; `error` is what the run raised."""
        return self._keep(self._finish(error))

    def _keep(self, profile: Profile) -> Profile:
        if self.store:
            from memprofile.jupyter.store import STORE

            STORE.add(profile)
        return profile

    def _finish(self, error: BaseException | None) -> Profile:
        if not self._running:
            raise CaptureError("this Profiler is not running; start() it first")
        captures: list[RawCapture] = []
        notes: list[Note] = []
        for c in reversed(self._collectors):
            try:
                captures.append(c.stop())
            except Exception as exc:  # one broken collector must not lose the others
                notes.append(Note("collector_failed", f"the {c.name} collector failed to stop: {exc!r}"))
        captures.reverse()
        # Wall time of the run including the collectors' own start and stop, so
        # every timeline sample lies within [0, duration].
        duration = time.perf_counter() - self._t0
        self._collectors = []
        self._running = False
        profile = build_profile(
            captures,
            name=self.name,
            started_at=self._started_at,
            duration_s=duration,
            source=self.source,
            error=error_info(error) if error is not None else None,
            notes=notes,
            frameworks=loaded_frameworks(),
            environment={"python": platform.python_version(), "memprofile": __version__},
        )
        return analyse(profile)

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
        result = self._finish(exc)
        assert self.profile is not None
        for f in dataclasses.fields(result):
            setattr(self.profile, f.name, getattr(result, f.name))
        self._keep(self.profile)  # the store holds the very object the user holds
