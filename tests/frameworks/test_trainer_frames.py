"""Finding the trainer on the stack reads a frame's `self` without keeping its other locals:
before Python 3.13 `frame.f_locals` stores a snapshot of every local on the frame, and a look
from inside a training loop written as a Trainer method kept that step's batch alive until the
method returned (the bare run frees it at the next step). A real Lightning Trainer subclass."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

pytestmark = pytest.mark.slow
L = pytest.importorskip("lightning.pytorch")

from memprofile.capture.trainers import TrainerWatch, find_trainer  # noqa: E402


class Batch:
    pass


class LoopTrainer(L.Trainer):
    def loop(self, watch: TrainerWatch):
        batch = Batch()
        first = weakref.ref(batch)
        watch.look(sys._getframe(0))  # as the optimizer hook looks, from inside the loop's frame
        batch = Batch()  # the next step's batch: the first one is garbage in a bare run
        gc.collect()
        return first() is None, batch

    def reads_its_locals(self):
        mine = locals()  # the method's own dict: a look must not empty it
        found = find_trainer(sys._getframe(0))
        return found, sorted(mine)


def test_a_look_from_a_trainer_method_keeps_none_of_its_locals():
    # GIVEN a Lightning Trainer subclass whose method is a training loop
    trainer = LoopTrainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    watch = TrainerWatch()
    # WHEN the profiler looks for the trainer from inside it, then the loop moves to the next batch
    freed, _ = trainer.loop(watch)
    # THEN the trainer was found and the first batch was freed as it is bare
    assert watch.info is not None and watch.info.framework == "lightning"
    assert freed


def test_a_method_that_reads_its_own_locals_is_left_alone():
    trainer = LoopTrainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    found, names = trainer.reads_its_locals()
    assert found is None  # not looked at: its locals() dict is the method's own
    assert names == ["self"]
