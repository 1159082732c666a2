"""The what-if engine: a cell re-executed on fake tensors measures what the real run allocates,
and leaves the notebook as it was."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import memprofile  # noqa: E402
from memprofile.whatif import StepSource, fake_run  # noqa: E402

SETUP = """
net = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(), nn.Linear(512, 10))
opt = torch.optim.Adam(net.parameters())
x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
losses = []
def step():
    opt.zero_grad()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    losses.append(loss.item())
    print(loss.item())
    opt.step()
step()
"""
CELL = "for i in range(3):\n    step()\n"


def notebook() -> dict:
    torch.manual_seed(0)
    ns: dict = {"torch": torch, "nn": nn}
    exec(SETUP, ns)
    return ns


def real_peak(ns: dict, cell: str) -> int:
    profiler = memprofile.profile(name="real", namespace=ns)
    with profiler:
        exec(cell, ns)
    return profiler.profile.peak_bytes


@pytest.mark.parametrize("k", [4, 8])
def test_a_function_from_another_cell_at_k_times_the_batch_peaks_where_the_real_run_does(k):
    # GIVEN a notebook whose step() (defined in an earlier cell) trains an MLP on batches of 256
    ns = notebook()
    base = fake_run(StepSource(CELL, ns, steps=3))
    assert base.ok and base.batch_size == 256
    # WHEN the cell is re-executed on fake tensors with k times the batch
    fake = fake_run(StepSource(CELL, ns, steps=3), batch=k, batch_size=base.batch_size)
    # THEN its peak is the real run's at that batch, to the byte
    ns["x"], ns["y"] = torch.randn(256 * k, 512), torch.randint(0, 10, (256 * k,))
    exec("step()", ns)  # the real notebook ran the cell before: Adam's state and the gradients exist
    assert fake.peak_bytes == pytest.approx(real_peak(ns, CELL), rel=0.01)


def test_a_fake_run_changes_nothing_the_notebook_can_see(capsys):
    ns = notebook()
    capsys.readouterr()
    grads = [p.grad.clone() for p in ns["net"].parameters()]
    state = {k: v.clone() for k, v in ns["opt"].state_dict()["state"][0].items()}
    weights = [p.detach().clone() for p in ns["net"].parameters()]
    rng, py_rng = torch.get_rng_state(), random.getstate()
    ns["net"].train()
    ns["random"] = random
    run = fake_run(StepSource(CELL + "net.eval()\nz = torch.randn(3)\nrandom.random()\n", ns, steps=0))
    assert run.ok, run.error
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, ns["net"].parameters()))
    assert all(torch.equal(a, p) for a, p in zip(weights, ns["net"].parameters()))
    assert all(torch.equal(v, ns["opt"].state_dict()["state"][0][k]) for k, v in state.items())
    assert torch.equal(rng, torch.get_rng_state()) and py_rng == random.getstate()
    assert ns["net"].training and len(ns["losses"]) == 1 and "z" not in ns
    assert capsys.readouterr().out == ""  # the cell's prints are silenced


def test_what_it_cannot_run_again_it_says_and_does_not_run(tmp_path):
    ns = notebook()
    ns["batches"] = iter([(ns["x"], ns["y"])])
    run = fake_run(StepSource("xb, yb = next(batches)\nnet(xb)\n", ns))
    assert not run.ok and "iterator `batches`" in run.error
    assert next(ns["batches"])[0] is ns["x"]  # not consumed
    target = tmp_path / "ckpt.txt"
    run = fake_run(StepSource(f"net(x)\nopen({str(target)!r}, 'w').write('x')\n", ns))
    assert not run.ok and "writes a file" in run.error and not target.exists()


def test_a_value_read_from_a_fake_tensor_is_named():
    run = fake_run(StepSource(CELL, notebook(), steps=3))
    assert run.scalar_reads >= 2 and any(".item()" in n for n in run.notes)


def test_a_model_the_copy_cannot_reach_is_not_written():
    # GIVEN step() whose globals are not the namespace given (a model held elsewhere)
    ns = notebook()
    state = {k: v.clone() for k, v in ns["opt"].state_dict()["state"][0].items()}
    run = fake_run(StepSource(CELL, dict(ns), steps=3))
    # THEN the run stops at the first write into a real tensor and says so; the optimizer is as it was
    assert not run.ok and "did not reach" in run.error
    assert all(torch.equal(v, ns["opt"].state_dict()["state"][0][k]) for k, v in state.items())


class Counter:
    """The user's own object: a re-run of the cell would change it."""

    def __init__(self) -> None:
        self.seen = 0

    def add(self, n: int) -> None:
        self.seen += n


def test_an_object_the_copy_cannot_make_is_not_run_again():
    # GIVEN a cell that updates the user's own object (a Trainer's state, a logger, a counter)
    ns = notebook()
    ns["counter"] = Counter()
    run = fake_run(StepSource(CELL + "counter.add(1)\n", ns, steps=3))
    # THEN the fake run refuses, names it, and the object is as it was
    assert not run.ok and "`counter` (a Counter)" in run.error
    assert ns["counter"].seen == 0


def test_arrays_are_read_not_written_and_outputs_the_cell_rebinds_are_fine():
    import numpy as np

    ns = notebook()
    ns["np"] = np
    ns["order"] = np.arange(8)
    ns["out"] = Counter()  # bound by the cell before it is read: the old value does not matter
    run = fake_run(StepSource("out = net(x)\nnp.random.shuffle(order)\n", ns))
    assert not run.ok and "read-only" in run.error
    assert list(ns["order"]) == list(range(8))
    run = fake_run(StepSource("out = net(x)\ntotal = order.sum()\n", ns))
    assert run.ok, run.error
