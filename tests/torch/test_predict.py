"""Will it fit: `p.predict` from one run at a small size, against real runs at the larger
size; the replay fallback for a profile loaded elsewhere; what it says it did."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import memprofile  # noqa: E402
from memprofile.analysis.predict.devices import device_spec  # noqa: E402
from tests.cells import run_cell as _run  # noqa: E402

# the shell is the session's: the names these cells bind are put back after each test
pytestmark = pytest.mark.usefixtures("names_back")


SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
class Tagger(nn.Module):  # a GRU tagger: not a family the engine was written on
    def __init__(self):
        super().__init__()
        self.emb, self.gru, self.head = nn.Embedding(1000, 64), nn.GRU(64, 96, batch_first=True), nn.Linear(96, 12)
    def forward(self, words):
        return self.head(self.gru(self.emb(words))[0])
tagger = Tagger()
adam = torch.optim.Adam(tagger.parameters())
def batch(n, length):
    return torch.randint(0, 1000, (n, length)), torch.randint(0, 12, (n, length))
words, tags = batch(4, 24)
"""
CELL = """
for _ in range(2):
    adam.zero_grad()
    torch.nn.functional.cross_entropy(tagger(words).flatten(0, 1), tags.flatten()).backward()
    adam.step()
"""


def _profile(ip, n: int, length: int, name: str):
    _run(ip, f"words, tags = batch({n}, {length})")
    _run(ip, CELL)  # as the notebook would have: state exists before the profiled run
    return _run(ip, f"%%memprofile -q -n {name}\n" + CELL)


@pytest.mark.parametrize(("batch", "seq"), [("4x", None), ("8x", None), (None, "2x")])
def test_a_prediction_from_a_small_run_is_the_real_run_at_the_larger_size(ip, fresh_store, batch, seq):
    # GIVEN a GRU tagger's training cell profiled at batch 4, length 24
    _run(ip, SETUP)
    small = _profile(ip, 4, 24, "small")
    # WHEN its run is predicted on the CPU at a larger batch or sequence
    pred = small.predict("cpu", batch=batch, seq_len=seq, largest_batch=False)
    # THEN the allocated peak is the real run's at that size, within 3 %
    n, length = 4 * int((batch or "1x")[:-1]), 24 * int((seq or "1x")[:-1])
    big = _profile(ip, n, length, "big")
    assert pred.method == "fake execution" and pred.measured_batch == 4 and pred.measured_seq_len == 24
    assert pred.batch == n and (seq is None or pred.seq_len == length)
    assert pred.allocated_peak_bytes == pytest.approx(big.peak_bytes, rel=0.03)
    assert pred.reserved_peak_bytes == pred.allocated_peak_bytes == pred.device_total_bytes  # the CPU: no cache
    assert small.predictions[-1] is pred


def test_on_a_gpu_it_adds_the_cache_the_context_and_the_workspaces_and_finds_the_largest_batch(ip, fresh_store):
    _run(ip, SETUP)
    small = _profile(ip, 4, 24, "small")
    t4 = device_spec("T4")
    pred = small.predict("T4", batch=64)
    assert pred.device == "T4" and pred.capacity_bytes == t4.capacity_bytes
    # cuBLAS's workspaces (forward, and backward's thread) are blocks of the allocator; the notebook's
    # other tensors (on the CPU) are not on the GPU
    on_cpu = small.predict("cpu", batch=64, largest_batch=False)
    assert pred.reserved_peak_bytes >= pred.allocated_peak_bytes
    assert pred.allocated_peak_bytes - 2 * t4.workspace_bytes <= on_cpu.allocated_peak_bytes
    assert pred.device_total_bytes == pred.reserved_peak_bytes + t4.context_bytes
    assert pred.fits and pred.largest_batch and pred.largest_batch > 64
    # the largest batch fits, one more does not
    at = small.predict("T4", batch=pred.largest_batch, largest_batch=False)
    over = small.predict("T4", batch=pred.largest_batch + 1, largest_batch=False)
    limit = t4.capacity_bytes * (1 - pred.headroom)
    assert at.device_total_bytes <= limit < over.device_total_bytes
    # a device too small: it does not fit, and the batch that does comes with the accumulation steps
    tiny = small.predict(t4.context_bytes + 200 * 2**20, batch=4096)
    assert not tiny.fits and tiny.largest_batch and tiny.largest_batch < 4096
    assert tiny.accumulation_steps == -(-4096 // tiny.largest_batch)
    assert any("not modelled" in n for n in pred.notes)


def test_a_profile_loaded_elsewhere_is_replayed_and_says_so(ip, fresh_store, tmp_path):
    _run(ip, SETUP)
    small = _profile(ip, 4, 24, "small")
    small.save(tmp_path / "p.json.gz")
    loaded = memprofile.load(tmp_path / "p.json.gz")
    pred = loaded.predict("cpu", batch="4x", largest_batch=False)
    assert pred.method == "replay" and any("replayed" in n for n in pred.notes)
    assert pred.measured_batch == 4 and pred.allocated_peak_bytes > small.peak_bytes
    assert memprofile.load(tmp_path / "p.json.gz").predictions == []  # nothing saved behind the user's back


def test_bad_devices_and_scales_say_what_is_known(ip, fresh_store):
    _run(ip, SETUP)
    small = _profile(ip, 4, 24, "small")
    with pytest.raises(ValueError, match="known are .*T4"):
        small.predict("K80")
    with pytest.raises(ValueError, match="factor"):
        small.predict("cpu", batch="lots")
    with pytest.raises(ValueError, match="positive"):
        small.predict("cpu", batch=0)


def test_a_cell_that_cannot_run_on_fake_tensors_falls_back_to_the_replay(ip, fresh_store):
    _run(ip, SETUP)
    _run(ip, "nonzero_cell = True")
    p = _run(
        ip,
        "%%memprofile -q -n dd\nfor _ in range(2):\n    adam.zero_grad()\n    out = tagger(words)\n"
        "    out[out > 0].sum().backward()\n    adam.step()\n",
    )
    pred = p.predict("cpu", batch="2x", largest_batch=False)
    assert pred.method in ("fake execution", "replay")
    if pred.method == "replay":
        assert any("could not run on fake tensors" in n for n in pred.notes)


def test_what_it_does_not_predict_it_says():
    from memprofile.model.profile import Device
    from tests.builders import make_profile

    host_only = make_profile()
    with pytest.raises(ValueError, match="no torch allocator"):
        host_only.predict("T4")
    keras_run = make_profile()
    keras_run.devices.append(Device("tf:CPU:0", "allocator", "mklcpu", 2**30, 0, 0))
    keras_run.peak.device = "tf:CPU:0"
    # a Keras run without its model (a saved profile): replayed, and it says so
    replayed = keras_run.predict("T4")
    assert replayed.method == "replay" and any("Keras model is not at hand" in n for n in replayed.notes)
