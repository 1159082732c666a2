"""A Lightning callback that profiles optimizer steps A-B of `trainer.fit()`:

    from memprofile.integrations.lightning import MemprofileCallback

    memory = MemprofileCallback(steps=(1, 3), out="profiles/")
    trainer = lightning.Trainer(max_steps=100, callbacks=[memory])
    trainer.fit(module, data)
    memory.profile.peak_bytes

It is a `lightning.pytorch.Callback` and, where the older `pytorch_lightning`
package is installed, a `pytorch_lightning.Callback` too: either Trainer takes it.
Steps are the Trainer's optimizer steps (`trainer.global_step`, as its logs count
them; with `accumulate_grad_batches` one step takes several batches), 1-based.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from memprofile.integrations._window import DEFAULT_STEPS, Steps, StepWindow, WindowResults


def _callback_classes() -> tuple[type, ...]:
    """Lightning's Callback classes of the packages installed: `lightning.pytorch`, `pytorch_lightning`."""
    found = []
    for module in ("lightning.pytorch", "pytorch_lightning"):
        try:
            found.append(importlib.import_module(module).Callback)
        except ImportError:
            continue
    if not found:
        raise ImportError(
            "memprofile.integrations.lightning needs Lightning: pip install lightning (or pytorch-lightning)"
        )
    return tuple(found)


class _Hooks(WindowResults):
    """The callback's hooks; the class users get adds Lightning's Callback base(s)."""

    def __init__(
        self,
        steps: Steps = DEFAULT_STEPS,
        out: str | os.PathLike | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        """Profile the Trainer's optimizer steps `steps` (first, last), 1-based.

        `out`: where the profile is written: a folder (NAME.memprofile.json.gz in it;
        NAME.rankR.memprofile.json.gz per rank under torchrun, for `memprofile merge`),
        or a file ending .json, .json.gz or .html; None: a rank writes to
        ./memprofile-<run id>/ as `memprofile run` does, a single process writes
        nothing. `name`: the profile's name (default: the script's). Other keywords
        are memprofile.profile()'s (budget_bytes, record_shapes, detail_steps, ...).
        After the window, `profile` is the Profile (also memprofile.last()),
        `saved_path` where it was written. Where another profile already runs
        (%%memprofile, `memprofile run`), it says so once and profiles nothing:
        that profile holds the steps."""
        self.window = StepWindow("MemprofileCallback (Lightning)", steps, out, name, options)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.window.run_begins()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.window.step_begins(
            trainer.global_step + 1, lambda: {"model": pl_module, "optimizers": list(trainer.optimizers)}
        )

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.window.steps_ended(trainer.global_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.window.run_ends()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.window.finish(exception)


MemprofileCallback = type(
    "MemprofileCallback",
    (_Hooks, *_callback_classes()),
    {"__module__": __name__, "__doc__": _Hooks.__init__.__doc__},
)
