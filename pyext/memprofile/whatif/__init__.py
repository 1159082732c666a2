"""The what-if engine: a cell's first steps re-executed on fake tensors.

The cell's own code runs again under torch's `FakeTensorMode` on fake copies
of the notebook's models, optimizers and data (nothing real is allocated or
computed), optionally with a change applied (a suggestion's code, a larger
batch). Every storage the fake run makes goes into an AllocationLog, the same
record a live capture gives, and is replayed the same way. What the run would
change in the notebook (gradients, optimizer state, random states, the names
it binds) is restored; what it prints is silenced.
"""

from memprofile.whatif.engine import FakeRun, StepSource, fake_run

__all__ = ["FakeRun", "StepSource", "fake_run"]
