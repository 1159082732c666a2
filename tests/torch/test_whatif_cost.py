"""The fake run's ledger records each op's outputs as torch's pytree walk finds them (its fast
paths for one tensor and a tuple of tensors change no row), and its per-op lookups (the row's
op name, whether the op writes into an argument) are per op overload, not per call."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from memprofile.whatif.ledger import FakeLedger, RealWrite  # noqa: E402


def _rows(code) -> list[tuple[str, list[int], str]]:
    ledger = FakeLedger()
    with FakeTensorMode(allow_non_fake_inputs=True), ledger:
        kept = code()
    log = ledger.close()
    assert kept is not None  # the outputs stay alive while the rows are read
    return list(zip(log.op, log.shape, log.dtype))


def test_one_tensor_a_tuple_a_list_and_views_are_rows_in_the_walks_order():
    # GIVEN ops returning one tensor, a tuple (values, indices), a list of new tensors and views
    def code():
        x = torch.randn(4, 6)
        values, indices = torch.max(x, 1)
        parts = torch.split(x, 2)  # views: x's storage, no row
        chunks = torch.ops.aten.split_with_sizes_copy.default(x, [1, 3])  # a list of new tensors
        return x, values, indices, parts, chunks

    # WHEN the ledger records them
    rows = _rows(code)
    # THEN each new storage is one row, named after its op, in the pytree walk's order
    assert rows == [
        ("aten::randn", [4, 6], "float32"),
        ("aten::max", [4], "float32"),
        ("aten::max", [4], "int64"),
        ("aten::split_with_sizes_copy", [1, 6], "float32"),
        ("aten::split_with_sizes_copy", [3, 6], "float32"),
    ]


def test_a_write_into_a_real_tensor_is_refused_on_every_call():
    # GIVEN a real tensor the fake copy did not reach
    real = torch.zeros(3)
    with FakeTensorMode(allow_non_fake_inputs=True), FakeLedger():
        for _ in range(2):  # the second call takes the per-overload lookup the first made
            # WHEN an op writes into it THEN the ledger refuses, each time
            with pytest.raises(RealWrite):
                real.add_(1)
    assert real.tolist() == [0.0, 0.0, 0.0]


SETUP = """
net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
opt = torch.optim.Adam(net.parameters())
x, y = torch.randn(8, 32), torch.randint(0, 4, (8,))
def data(n):  # a notebook function: the fake run's globals hold it, and it them (a cycle)
    return torch.randn(n, 32), torch.randint(0, 4, (n,))
"""
STEP = "opt.zero_grad()\nnn.functional.cross_entropy(net(x), y).backward()\nopt.step()\n"


def _runs(cell: str, factors: list[float]):
    from torch import nn

    from memprofile.whatif import StepSource, fake_run

    torch.manual_seed(0)
    ns: dict = {"torch": torch, "nn": nn}
    exec(SETUP, ns)
    exec(STEP, ns)  # the notebook ran the step before: Adam's state exists
    source = StepSource(cell, ns, steps=1)
    return [fake_run(source, batch=f, batch_size=8) for f in factors]


def test_the_line_through_three_fake_runs_is_a_fourth_run_at_another_batch():
    from memprofile.whatif.engine import batch_line

    # GIVEN an MLP's training step run on fake tensors at batches 8, 16 and 24, and at 40
    *three, at_40 = _runs(STEP, [1.0, 2.0, 3.0, 5.0])
    # WHEN the line through the three gives the run at 40
    line = batch_line(three)
    assert line is not None
    made = line.at(40)
    # THEN its rows' sizes and its peak are the fake run's at 40, byte for byte
    assert made is not None and made.log is not None and at_40.log is not None
    assert made.log.size == at_40.log.size and made.peak_bytes == at_40.peak_bytes
    assert made.log.seq_alloc == at_40.log.seq_alloc and made.log.seq_free == at_40.log.seq_free


@pytest.mark.parametrize(
    "cell",
    [
        # rows that grow with the batch's square: a similarity matrix
        STEP.replace("net(x)", "(net(x) @ net(x).T)[:, :4]"),
        # rows whose number grows with the batch: one op per sample
        STEP.replace("net(x)", "(net(x) + torch.stack([r.sum() for r in x])[:, None])"),
    ],
)
def test_runs_whose_rows_are_not_affine_in_the_batch_give_no_line(cell):
    from memprofile.whatif.engine import batch_line

    # GIVEN a step whose memory is not affine in the batch, run at batches 8, 16 and 24
    runs = _runs(cell, [1.0, 2.0, 3.0])
    assert all(r.ok for r in runs), [r.error for r in runs]
    # WHEN a line is asked for THEN there is none (the search makes fake runs instead)
    assert batch_line(runs) is None


def test_a_fake_runs_log_is_the_runs_and_does_not_change_after_it():
    import gc

    # GIVEN a fake run of a training step, returned
    (run,) = _runs(STEP, [1.0])
    assert run.log is not None
    at_return = list(run.log.seq_free)
    # WHEN what it left alive (the fake copies) is collected afterwards
    gc.collect()
    # THEN its log still says what the run did (the search compares logs of runs made at
    # different times; a copy freed later by the collector is no free of the run)
    assert run.log.seq_free == at_return
