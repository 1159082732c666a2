"""A Hugging Face `transformers.TrainerCallback` that profiles optimizer steps
A-B of `Trainer.train()`:

    from memprofile.integrations.huggingface import MemprofileCallback

    memory = MemprofileCallback(steps=(1, 3), out="profiles/")
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[memory])
    trainer.train()
    memory.profile.peak_bytes

Steps are the Trainer's optimizer steps (`state.global_step`, as its logs count
them; with `gradient_accumulation_steps` one step takes several batches), 1-based;
each `train()` call is a run with its window (a run resumed from a checkpoint
goes on counting from the checkpoint's step).
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from memprofile.integrations._window import DEFAULT_STEPS, Steps, StepWindow, WindowResults


class MemprofileCallback(WindowResults, TrainerCallback):
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
    that profile holds the steps.
    """

    def __init__(
        self,
        steps: Steps = DEFAULT_STEPS,
        out: str | os.PathLike | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        self.window = StepWindow("MemprofileCallback (Hugging Face)", steps, out, name, options)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.window.run_begins()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        objects = {k: kwargs.get(k) for k in ("model", "optimizer", "lr_scheduler")}
        self.window.step_begins(state.global_step + 1, lambda: objects)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.window.steps_ended(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.window.run_ends()
