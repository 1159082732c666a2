"""A private torch API that a torch release removed or changed degrades to a
named note in the profile, never an exception in the user's cell: the torch
collector's entries in capture/torch/compat.py, each taken away in turn."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from memprofile.capture.torch import compat as torch_compat  # noqa: E402
from memprofile.profiler import Profiler  # noqa: E402


def _train(model, opt, x):
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.fixture
def lstm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(100, 32), torch.nn.LSTM(32, 64, batch_first=True))
    head = torch.nn.Linear(64, 5)

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = model, head

        def forward(self, x):
            return self.head(self.body(x)[0])

    tagger = Tagger()
    return tagger, torch.optim.SGD(tagger.parameters(), lr=0.1), torch.randint(0, 100, (8, 12))


def test_without_the_record_function_ops_layers_still_come_through_the_public_class(lstm, monkeypatch):
    monkeypatch.setattr(torch_compat, "record_function_ops", lambda torch: None)
    model, opt, x = lstm
    with Profiler(name="compat", store=False, namespace={"model": model, "opt": opt, "x": x}) as p:
        _train(model, opt, x)
    assert any(w.code == "torch_compat_record_function" for w in p.warnings)
    assert {"head", "body.1"} <= {row.name for row in p.layers if row.forward_bytes or row.activation_bytes}


def test_without_the_graph_task_id_the_profile_says_what_it_cannot_tell(lstm, monkeypatch):
    monkeypatch.setattr(torch_compat, "graph_task_id", lambda torch: None)
    model, opt, x = lstm
    with Profiler(name="compat", store=False, namespace={"model": model, "opt": opt, "x": x}) as p:
        _train(model, opt, x)
    note = next(w.message for w in p.warnings if w.code == "torch_compat_graph_task")
    assert "checkpointing" in note and p.peak_bytes > 0


def test_every_entry_is_there_on_this_torch():
    assert torch_compat.record_function_ops(torch) is not None
    assert torch_compat.graph_task_id(torch) is not None
    assert torch_compat.event_type_torch_op() is not None
    assert torch.__version__.split("+")[0] in torch_compat.CHECKED_ON
