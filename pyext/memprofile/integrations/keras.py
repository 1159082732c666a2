"""A Keras callback that profiles steps A-B of `model.fit()`:

    from memprofile.integrations.keras import MemprofileCallback

    memory = MemprofileCallback(steps=(1, 3), out="profiles/")
    model.fit(x, y, epochs=2, callbacks=[memory])
    memory.profile.peak_bytes

Steps are `fit`'s training steps (batches), 1-based, counted over its epochs
from the start of each `fit` call; with `steps_per_execution=k` Keras calls its
callbacks once per k steps: a window's ends round out to whole executions, and
each execution is one step of the profile.
Keras runs the steps in a tf.function: TensorFlow's profiler, started at the
window's first step, records the ops and allocations of the traced steps, and
this callback tells the profile where each step begins and ends (the profile's
own hooks on `fit` only see a `fit` called after the profile started).
"""

from __future__ import annotations

import os
from typing import Any

import keras  # type: ignore[import-untyped]

from memprofile.integrations._window import DEFAULT_STEPS, Steps, StepWindow, WindowResults


class MemprofileCallback(WindowResults, keras.callbacks.Callback):
    """Profile `fit`'s training steps `steps` (first, last), 1-based.

    `out`: where the profile is written: a folder (NAME.memprofile.json.gz in it;
    NAME.rankR.memprofile.json.gz per rank where the launcher says the rank:
    RANK and WORLD_SIZE, MPI's or SLURM's, or TF_CONFIG), or a file
    ending .json, .json.gz or .html; None: a single process writes nothing (the
    profile is `profile`). `name`: the profile's name (default: the script's).
    Other keywords are memprofile.profile()'s (budget_bytes, detail_steps, ...).
    After the window, `profile` is the Profile (also memprofile.last()),
    `saved_path` where it was written. Where another profile already runs
    (%%memprofile, `memprofile run`), it says so once and profiles nothing:
    that profile holds the steps.
    """

    def __init__(
        self,
        steps: Steps = DEFAULT_STEPS,
        out: str | os.PathLike | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.window = StepWindow("MemprofileCallback (Keras)", steps, out, name, options)
        self._done = 0  # steps this fit has ended
        self._batch = 0  # the batch index the running execution began at
        self._ticks: Any = None  # the TF collector's step hooks while the window runs

    def on_train_begin(self, logs: Any = None) -> None:
        self.window.run_begins()
        self._done = 0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._batch = batch
        was_running = self.window.running
        span = getattr(self.model, "steps_per_execution", 1)
        span = span if isinstance(span, int) and span > 0 else 1
        if self.window.step_begins(self._done + 1, lambda: {"model": self.model}, span):
            if not was_running:
                self._ticks = _step_ticks(self.window.profiler, self.model)
            if self._ticks is not None:
                self._ticks.begin()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._done += max(1, batch - self._batch + 1)  # steps_per_execution: the batches of one call
        if self.window.running and self._ticks is not None:
            self._ticks.end()
        self.window.steps_ended(self._done)
        if not self.window.running:
            self._ticks = None

    def on_train_end(self, logs: Any = None) -> None:
        self.window.run_ends()
        self._ticks = None


class _Ticks:
    """The TF collector's own step hooks (capture/tensorflow/collector.py), the
    ones its `fit` callback calls: for a `fit` already running when the profile
    started, this callback is where the steps are seen."""

    def __init__(self, collector: Any) -> None:
        self.begin = collector._begin_step
        self.end = collector._end_step


def _step_ticks(profiler: Any, model: Any) -> _Ticks | None:
    """Where this callback ends the profile's steps: None where no TF collector runs,
    or where the collector counts them itself (`run_eagerly`: each eager optimizer
    `apply` ends a step, capture/tensorflow/step_hooks.py)."""
    if profiler is None or getattr(model, "run_eagerly", False):
        return None
    collector = next((c for c in getattr(profiler, "_collectors", ()) if c.name == "tensorflow"), None)
    if collector is None or not hasattr(collector, "_begin_step") or not hasattr(collector, "_end_step"):
        return None
    return _Ticks(collector)
