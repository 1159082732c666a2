"""Advice about the cell, not the notebook, and "where" for every byte: the
failures of issue 12, each on a workload written for this test (a small
transformer language model whose loss is computed in the cell, two models in
one notebook, a GRU tagger, a model built inside the cell), run as a user
runs them: cells in a real IPython shell."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")

import memprofile  # noqa: E402
from tests.cells import run_cell as _run  # noqa: E402

MiB = 2**20
V, T, B = 8000, 64, 16  # as in LM_SETUP

LM_SETUP = """
import torch, torch.nn.functional as F
from torch import nn
torch.manual_seed(0)
V, D, T, B = 8000, 128, 64, 16

class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 4, 256, batch_first=True), 2)
        self.head = nn.Linear(D, V)

    def forward(self, tokens):
        return self.head(self.enc(self.emb(tokens)))

lm = TinyLM()
lm_opt = torch.optim.Adam(lm.parameters(), lr=1e-3)
tokens = torch.randint(0, V, (B, T))
targets = torch.randint(0, V, (B, T))
"""
LM_STEP = """\
for step in range(2):
    lm_opt.zero_grad(set_to_none=True)
    logits = lm(tokens)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
    loss.backward()
    lm_opt.step()
"""


def _profile(ip, cell: str, name: str):
    return _run(ip, f"%%memprofile -q -n {name}\n{cell}")


def _get(p, rule):
    return next((s for s in p.suggestions if s.id == rule), None)


@pytest.fixture
def lm(ip, fresh_store):
    # A torch-only notebook: Keras models other tests left in the shared shell
    # (a layer named `head`) would collide with the LM's `head` in the profile's
    # layer table (a known gap: two frameworks' layers of one name).
    keras = sys.modules.get("keras")
    if keras is not None:
        for name in [k for k, v in ip.user_ns.items() if isinstance(v, keras.Model)]:
            del ip.user_ns[name]
    _run(ip, LM_SETUP)
    _profile(ip, LM_STEP, "warm")  # the optimizer state exists, as in any later step
    return _profile(ip, LM_STEP, "lm")


# Serial tier: its own process and shell. In two full parallel runs (2026-12-06) the LM's Adam state
# for `emb` came out with no layer after other tests in the same shared shell; not reproduced alone
# or in six orderings tried; the cause is not found (issue 29's closing note).
@pytest.mark.serial
def test_every_byte_at_the_peak_has_a_line_and_the_loss_memory_is_named_by_its_line(lm):
    peak = lm.peak
    # GIVEN a training step whose loss is computed outside any module
    # THEN each byte alive at the peak is placed on a line of the cell (0: before it)
    assert sum(peak.by_line.values()) == peak.bytes
    assert set(peak.by_line) <= {0, 1, 2, 3, 4, 5, 6}
    lines = {s.line: s for s in lm.lines}
    assert "cross_entropy" in lines[4].text and any("cross_entropy" in op for op in lines[4].ops)
    assert any("Backward" in op for op in lines[5].ops) and "backward" in lines[5].text
    assert lines[3].layers and "head" in lines[3].layers  # the model call's line names its layers
    # the peak names its op and line; its largest tensors carry their lines
    assert peak.line in (4, 5) and peak.op
    logit_sized = [t for t in peak.tensors if t.bytes == B * T * V * 4]
    assert {t.line for t in logit_sized} == {3, 4, 5}
    # nothing is "(no layer)": memory made outside modules goes by line and op
    assert "(no layer)" not in peak.by_layer
    assert any(k.startswith("line 4: ") and "cross_entropy" in k for k in peak.by_layer)
    # parameters and Adam state from before the cell belong to their layers
    before = [t for t in peak.tensors if t.line == 0 and t.category in ("parameter", "optimizer_state")]
    assert before and all(t.layer for t in before)
    assert lm.ops[0].line in (3, 4, 5) and any(layer.line == 3 for layer in lm.layers if layer.name == "head")


def test_large_logits_rule_and_its_fix_measured(ip, lm):
    # GIVEN the language model's logits, log-softmax and their gradients at the peak
    s = _get(lm, "chunked_loss")
    assert s is not None and "line 4" in s.evidence and "head" in s.evidence
    # THEN the code rewrites the cell's own loss line with the cell's names
    assert "chunked_cross_entropy(logits, head, targets.view(-1))" in s.code and "lm.get_submodule('head')" in s.code
    # AND running it (as the cell that replaces this one) saves what it claims, within 25 %
    after = _profile(ip, s.code, "chunked")
    _run(ip, "lm.head = head")  # put the model back for the other tests
    measured = lm.peak_bytes - after.peak_bytes
    assert after.error is None
    assert abs(measured - s.estimated_saving_bytes) <= 0.25 * measured, (measured, s.estimated_saving_bytes)


def test_a_leak_fix_frees_what_it_says(ip, lm):
    # GIVEN logits and loss kept in globals after loss.backward(): the graph is already freed
    s = _get(lm, "notebook_leak")
    assert s is not None and "autograd graph" not in s.evidence and ".detach()" not in s.code, (
        lm.kept,
        [(d.name, d.baseline_bytes, d.end_bytes) for d in lm.devices],
    )
    assert "del logits" in s.code
    # WHEN the fix runs THEN the allocator frees what the rule estimated (within 25 %)
    freed = _profile(ip, s.code.split("#")[0], "del")
    cpu = freed.device("cpu")
    assert abs((cpu.baseline_bytes - cpu.end_bytes) - s.estimated_saving_bytes) <= 0.25 * s.estimated_saving_bytes


def test_a_kept_graph_is_detached_and_that_frees_the_saved_activations(ip, fresh_store):
    # GIVEN a forward pass with autograd on whose output a global keeps (its graph saves activations)
    _run(
        ip,
        """
import torch
from torch import nn
torch.manual_seed(0)
tagger = nn.GRU(64, 256, num_layers=2, batch_first=True)
seqs = torch.randn(64, 128, 64)
""",
    )
    p = _profile(ip, "states = tagger(seqs)[0]", "gru")
    s = _get(p, "notebook_leak")
    assert s is not None and "states still holds an autograd graph" in s.evidence
    assert "states = states.detach()" in s.code
    graph = next(k for k in p.kept if k.name == "states")
    # WHEN the cell runs again followed by the fix THEN what it keeps at its end
    # shrinks by what the graph saved. (Measured inside one profile: torch's CPU
    # allocator reports no free of a block allocated before the profile started.)
    fixed = _profile(ip, "states = tagger(seqs)[0]\n" + s.code, "detached")
    kept = p.device("cpu").end_bytes - p.device("cpu").baseline_bytes
    left = fixed.device("cpu").end_bytes - fixed.device("cpu").baseline_bytes
    measured = kept - left
    assert abs(measured - graph.graph_bytes) <= 0.25 * graph.graph_bytes, (measured, graph.graph_bytes)
    assert abs(measured - s.estimated_saving_bytes) <= 0.25 * measured, (measured, s.estimated_saving_bytes)


SMALL_SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
big = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1024))
big_opt = torch.optim.Adam(big.parameters())
xb = torch.randn(32, 1024)
big_opt.zero_grad(); big(xb).square().mean().backward(); big_opt.step()   # big's Adam state exists
small = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))
xs = torch.randn(64, 256)
"""


def test_optimizer_advice_is_about_the_optimizer_the_cell_steps(ip, fresh_store):
    # GIVEN a notebook that trained a large model with Adam (its state alive),
    # and a cell that builds and trains a small model with its own Adam
    _run(ip, SMALL_SETUP)
    p = _profile(
        ip,
        """\
small_opt = torch.optim.Adam(small.parameters(), lr=3e-4)
for _ in range(3):
    small_opt.zero_grad()
    small(xs).square().mean().backward()
    small_opt.step()
""",
        "small",
    )
    stepped = [o for o in p.optimizers if o.stepped]
    assert [o.name for o in stepped] == ["small_opt"] and stepped[0].models == ["small"]
    big = next(o for o in p.optimizers if o.name == "big_opt")
    assert not big.stepped and big.state_bytes > 10 * stepped[0].state_bytes
    s = _get(p, "optimizer_state")
    # THEN no advice claims the big model's state; if any, it is the small one's, in the cell's names
    if s is not None:
        assert s.estimated_saving_bytes <= stepped[0].state_bytes and "big" not in s.code
        assert "small_opt = torch.optim.SGD(small.parameters(), lr=0.0003, momentum=0.9)" in s.code
    # AND the zero_grad() the cell calls (set_to_none by default) is not advised again,
    # even with big's gradients alive from before the cell
    assert _get(p, "zero_grad_set_to_none") is None


def test_optimizer_advice_code_uses_the_cell_names_and_saves_what_it_claims(ip, fresh_store):
    # GIVEN a GRU trained with AdamW created inside the cell (a family the rule was not built on)
    _run(
        ip,
        """
import torch
from torch import nn
torch.manual_seed(0)
rnn = nn.GRU(512, 1024, batch_first=True)
rnn_in = torch.randn(4, 8, 512)
""",
    )
    cell = """\
rnn_opt = torch.optim.AdamW(rnn.parameters(), lr=1e-3)
for _ in range(2):
    rnn_opt.zero_grad()
    rnn(rnn_in)[0].square().mean().backward()
    rnn_opt.step()
"""
    before = _profile(ip, cell, "adamw")
    s = _get(before, "optimizer_state")
    assert s is not None and "rnn_opt (AdamW)" in s.evidence, (
        before.optimizers,
        before.peak.by_category,
        before.suggestions,
        before.warnings,
    )
    assert "rnn_opt = torch.optim.SGD(rnn.parameters(), lr=0.001, momentum=0.9)" in s.code
    after = _profile(ip, s.code, "sgd")
    measured = before.peak_bytes - after.peak_bytes
    assert abs(measured - s.estimated_saving_bytes) <= 0.25 * measured, (measured, s.estimated_saving_bytes)


def test_zero_grad_advice_fires_only_where_gradients_are_kept_and_its_fix_measures(ip, fresh_store):
    # GIVEN a CNN whose cell zeroes gradients instead of freeing them
    _run(
        ip,
        """
import torch
from torch import nn
torch.manual_seed(0)
cnn = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 32 * 32, 512),
                    nn.ReLU(), nn.Linear(512, 10))
cnn_opt = torch.optim.SGD(cnn.parameters(), lr=0.01)
images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
cnn_opt.zero_grad(set_to_none=False); torch.nn.functional.cross_entropy(cnn(images), labels).backward()
""",
    )
    cell = """\
for _ in range(2):
    cnn_opt.zero_grad(set_to_none=False)
    torch.nn.functional.cross_entropy(cnn(images), labels).backward()
    cnn_opt.step()
"""
    before = _profile(ip, cell, "zeroed")
    s = _get(before, "zero_grad_set_to_none")
    assert s is not None and "cnn_opt.zero_grad(set_to_none=True)" in s.code and "set_to_none=False" not in s.code
    after = _profile(ip, s.code, "freed")
    measured = before.peak_bytes - after.peak_bytes
    assert abs(measured - s.estimated_saving_bytes) <= 0.25 * measured, (measured, s.estimated_saving_bytes)
    # AND the fixed cell gets no such advice
    assert _get(after, "zero_grad_set_to_none") is None


def test_lines_of_a_model_built_in_the_cell_a_loop_iterable_and_an_error(ip, fresh_store):
    _run(ip, "import torch\nfrom torch import nn")
    p = _profile(
        ip,
        """\
net = nn.Sequential(nn.Linear(256, 4096), nn.ReLU(), nn.Linear(4096, 256))
batches = (torch.randn(512, 256) for _ in range(3))
for batch in batches:
    out = net(batch)
""",
        "built",
    )
    lines = {s.line: s for s in p.lines}
    # the parameters are made on line 1, each batch by the `for` line (3), the forward on line 4
    assert lines[1].allocated_bytes >= 2 * 256 * 4096 * 4
    assert lines[3].allocated_bytes >= 3 * 512 * 256 * 4 and "randn" in " ".join(lines[3].ops)
    assert lines[4].allocated_bytes >= 3 * 512 * 4096 * 4
    assert 2 not in lines  # a generator expression allocates nothing when it is made
    result = ip.run_cell("%%memprofile -q -n fails\nok = torch.ones(10)\n\nraise ValueError('on line 3')")
    assert result.error_in_exec is not None
    assert memprofile.last().error.line == 3


def test_a_variable_rebound_to_a_new_tensor_is_new_even_at_the_old_objects_address():
    # GIVEN a name rebound during the run to a new tensor of the same size: Python
    # puts the new object where the old one was, so id() alone says "the same"
    from memprofile.capture.namespace import NamespaceCollector

    ns = {"logits": torch.ones(2**20)}
    collector = NamespaceCollector(ns)
    collector.start()
    before = id(ns["logits"])
    del ns["logits"]
    ns["logits"] = torch.ones(2**20)
    kept = {k.name: k for k in collector.stop().kept}
    # THEN it is new (what the leak rule names), whether or not the id was reused
    assert kept["logits"].new, (before == id(ns["logits"]), kept)
    # AND a name that kept its tensor is not new
    collector.start()
    assert not {k.name: k for k in collector.stop().kept}["logits"].new
