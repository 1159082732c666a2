"""The amp rule, checked the way a user meets it: a cell profiled in a real
IPython shell, the suggestion's code run in place of the cell and profiled,
and the measured saving (peak before minus after, on the peak device) held
against the estimate. The workloads are written for these tests: a small
transformer language model whose 8,000-word loss is computed outside any
module, a CNN (conv + BatchNorm + ReLU), a residual MLP with a hand-written
loss; and where autocast would not save, the rule must stay quiet."""

from __future__ import annotations

import ast

import pytest

torch = pytest.importorskip("torch")

import memprofile  # noqa: E402
from memprofile.analysis.cell import cell_body  # noqa: E402
from memprofile.analysis.rules import autocast_code  # noqa: E402

MiB = 2**20
TOLERANCE = 0.25

LM = """
import torch
from torch import nn
from torch.nn import functional as F
torch.manual_seed(0)
torch.set_num_threads(1)
V, D, T, B = 8000, 128, 64, 16
class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.pos = nn.Parameter(torch.zeros(T, D))
        layer = nn.TransformerEncoderLayer(D, 4, 4 * D, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, V)
    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.head(self.norm(self.blocks(self.emb(x) + self.pos, mask=mask, is_causal=True)))
lm = LM()
optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3)
tokens = torch.randint(0, V, (B, T + 1))
x, y = tokens[:, :-1], tokens[:, 1:]
F.cross_entropy(lm(x).view(-1, V), y.reshape(-1)).backward()  # warm-up: AdamW's state exists before the runs
optimizer.step()
optimizer.zero_grad(set_to_none=True)
"""
LM_STEP = """logits = lm(x)
loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))
loss.backward()
optimizer.step()
optimizer.zero_grad(set_to_none=True)"""

CNN = """
import torch
from torch import nn
from torch.nn import functional as F
torch.manual_seed(0)
torch.set_num_threads(1)
def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
net = nn.Sequential(conv_bn(3, 32), conv_bn(32, 32), nn.MaxPool2d(2), conv_bn(32, 64), conv_bn(64, 64),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
images, labels = torch.randint(0, 255, (32, 3, 48, 48)).float() / 255, torch.randint(0, 10, (32,))
opt.zero_grad(); F.cross_entropy(net(images), labels).backward(); opt.step()  # momentum buffers exist
"""
CNN_STEP = """opt.zero_grad()
out = net(images)
loss = F.cross_entropy(out, labels)
loss.backward()
opt.step()"""

MLP = """
import torch
from torch import nn
torch.manual_seed(0)
torch.set_num_threads(1)
class Residual(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(x)))
mlp = nn.Sequential(nn.Linear(32, 256), *[Residual(256) for _ in range(4)], nn.Linear(256, 1))
sgd = torch.optim.SGD(mlp.parameters(), lr=1e-3)
feats, target = torch.randn(4096, 32), torch.randn(4096, 1)
def train_step():
    sgd.zero_grad()
    ((mlp(feats) - target) ** 2).mean().backward()
    sgd.step()
train_step()
"""
# two steps in a loop, the loss written out by hand
MLP_STEPS = """for step in range(2):
    sgd.zero_grad()
    err = ((mlp(feats) - target) ** 2).mean()
    err.backward()
    sgd.step()"""

#: Names the cells bind: deleted before each run, so that both runs start alike.
BOUND = ("logits", "loss", "out", "err", "step", "val_loss", "best")


@pytest.fixture
def shell(ip, fresh_store):
    before = set(ip.user_ns)
    yield ip
    for name in set(ip.user_ns) - before:  # the workload's models, for the next test's baseline
        ip.user_ns.pop(name, None)


def _profile(ip, cell, *, fresh=True, options=""):
    """The cell profiled; `fresh`: without what the last run left in the names it binds."""
    if fresh:
        ip.run_cell(f"for _name in {BOUND!r}: globals().pop(_name, None)")
    result = ip.run_cell(f"%%memprofile -q {options}\n" + cell)
    assert result.success, result.error_in_exec
    return memprofile.last()


def _within(amp, before, after):
    measured = before.peak_bytes - after.peak_bytes
    first_line = cell_body(before.source).strip().splitlines()[0][:40]
    print(
        f"amp on {first_line!r}: peak {before.peak_bytes / MiB:.2f} MiB, estimated saving "
        f"{amp.estimated_saving_bytes / MiB:.2f} MiB, measured {measured / MiB:.2f} MiB"
    )
    assert abs(amp.estimated_saving_bytes - measured) <= TOLERANCE * measured, (
        f"estimated {amp.estimated_saving_bytes / MiB:.2f} MiB, measured {measured / MiB:.2f} MiB"
    )
    return measured


def _amp(p):
    return next((s for s in p.suggestions if s.id == "amp"), None)


def _calls_inside_autocast(code: str) -> set[str]:
    """Method names called inside the code's `with torch.autocast(...)` blocks."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.With) and "autocast" in ast.unparse(node.items[0].context_expr):
            found |= {
                n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            }
    return found


@pytest.mark.parametrize(
    "setup, cell, names",
    [
        pytest.param(LM, LM_STEP, ("logits = lm(x)", "loss.backward()", "optimizer.step()"), id="lm-loss-outside"),
        pytest.param(CNN, CNN_STEP, ("out = net(images)", "loss.backward()", "opt.step()"), id="cnn-batchnorm"),
        pytest.param(MLP, MLP_STEPS, ("for step in range(2):", "err.backward()", "sgd.step()"), id="residual-mlp-loop"),
    ],
)
def test_the_code_saves_what_the_estimate_says(shell, setup, cell, names):
    shell.run_cell(setup)
    before = _profile(shell, cell)
    amp = _amp(before)
    assert amp is not None, [s.id for s in before.suggestions]
    # the code: the cell, with only its forward pass and loss under autocast
    compile(amp.code, "<amp>", "exec")
    assert 'with torch.autocast("cpu", dtype=torch.bfloat16):' in amp.code
    assert all(name in amp.code for name in names)
    inside = _calls_inside_autocast(amp.code)
    assert inside and not inside & {"backward", "step", "zero_grad"}
    after = _profile(shell, amp.code)
    assert after.peak_device.name == before.peak_device.name
    assert any(t.dtype == "bfloat16" for t in after.peak.tensors)  # it really ran in 16 bits
    assert _within(amp, before, after) > 4 * MiB


def test_a_cell_run_again_counts_what_its_last_run_left(shell):
    # re-run as notebooks are: the logits the last run left stay alive until
    # the new ones replace them, and under autocast the last run made them 16-bit
    shell.run_cell(LM)
    cell = "logits = lm(x)\nbest = logits[:, -1].argmax(-1)"
    shell.run_cell(cell)
    before = _profile(shell, cell, fresh=False)
    amp = _amp(before)
    assert amp is not None and 'with torch.autocast("cpu", dtype=torch.bfloat16):\n    logits = lm(x)' in amp.code
    shell.run_cell(amp.code)
    after = _profile(shell, amp.code, fresh=False)
    assert _within(amp, before, after) > 20 * MiB


def test_a_long_loop_whose_timeline_was_thinned(shell):
    # 300 small steps, then a large one: more events than the stored timeline
    # keeps, so the estimate is made at the peak instant
    shell.run_cell(MLP)
    cell = (
        "for step in range(300):\n    sgd.zero_grad()\n    err = ((mlp(feats[:64]) - target[:64]) ** 2).mean()\n"
        "    err.backward()\n    sgd.step()\nerr = (mlp(feats) - target).abs().mean()\nerr.backward()"
    )
    # every event kept: all steps in detail, and a budget the 300 steps' events stay under
    before = _profile(shell, cell, options="--detail-steps all --budget 64G")
    timeline = before.timeline(before.peak_device.name)
    assert timeline.recorded_points > len(timeline.live_bytes)
    amp = _amp(before)
    assert "the run's timeline was thinned" in amp.evidence
    _within(amp, before, _profile(shell, amp.code, options="--detail-steps all --budget 64G"))


def test_the_lm_estimate_counts_its_float32_loss(shell):
    # the flat share this rule used to take (61 MiB here) missed that the
    # 8,000-word cross-entropy and its gradients stay float32 under autocast
    shell.run_cell(LM)
    p = _profile(shell, LM_STEP)
    amp = _amp(p)
    assert "cross_entropy_loss" in amp.evidence and "stay float32" in amp.evidence
    assert amp.estimated_saving_bytes < 0.3 * p.peak.by_category["activation"]


def test_quiet_where_autocast_makes_the_peak_grow(shell):
    # forward and loss with the graph kept, no backward: under autocast the
    # float32 loss first copies the 16-bit logits to float32, and the peak grows
    shell.run_cell(LM)
    cell = "logits = lm(x)\nval_loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))"
    before = _profile(shell, cell)
    assert before.peak.by_category["activation"] > 30 * MiB
    assert _amp(before) is None
    # and so it would: the cell under autocast, measured
    code = autocast_code.rewrite(before.source, device="cpu", trained=False)
    assert code.startswith('import torch\n\nwith torch.autocast("cpu", dtype=torch.bfloat16):\n    logits = lm(x)')
    after = _profile(shell, code)
    assert after.peak_bytes > before.peak_bytes


def test_quiet_when_the_cell_already_uses_autocast(shell):
    shell.run_cell(LM)
    under = _profile(
        shell,
        'with torch.autocast("cpu", dtype=torch.bfloat16):\n'
        "    logits = lm(x)\n    loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))\n"
        "loss.backward()\noptimizer.step()\noptimizer.zero_grad(set_to_none=True)",
    )
    assert _amp(under) is None
    # the cell's own autocast, switched off: float32 activations, and still the cell's choice
    off = _profile(
        shell, LM_STEP.replace("logits = lm(x)", 'with torch.amp.autocast("cpu", enabled=False):\n    logits = lm(x)')
    )
    assert not any(t.dtype == "bfloat16" for t in off.peak.tensors)
    assert _amp(off) is None
    assert _amp(_profile(shell, LM_STEP)) is not None  # the same step without it


def test_backward_inside_a_called_function_is_named_and_the_cell_kept(shell):
    shell.run_cell(MLP)
    p = _profile(shell, "train_step()\nprint('stepped')")
    amp = _amp(p)
    assert amp is not None
    assert "backward() runs inside train_step()" in amp.code
    assert amp.code.rstrip().endswith("train_step()\nprint('stepped')")
    assert "with torch.autocast" not in amp.code.replace("#     with torch.autocast", "")
    compile(amp.code, "<amp>", "exec")


def test_float16_code_scales_the_loss_with_the_cells_names():
    # CUDA's float16 code, from a profile-free rewrite of the LM cell; run on
    # CPU below, where the GradScaler disables itself, to prove the names resolve
    code = autocast_code.rewrite("%%memprofile\n" + LM_STEP, device="cuda", trained=True, optimizers=("optimizer",))
    assert 'scaler = torch.amp.GradScaler("cuda")' in code
    assert 'with torch.autocast("cuda", dtype=torch.float16):' in code
    lines = code.splitlines()
    assert lines[lines.index("scaler.scale(loss).backward()") + 1 :][:3] == [
        "scaler.step(optimizer)",
        "scaler.update()",
        "optimizer.zero_grad(set_to_none=True)",
    ]
    assert not _calls_inside_autocast(code) & {"backward", "step", "scale"}


def test_float16_code_runs_as_the_cell_would(shell):
    shell.run_cell(LM)
    code = autocast_code.rewrite(LM_STEP, device="cuda", trained=True, optimizers=("optimizer",))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CUDA here: autocast("cuda") and the scaler switch themselves off
        result = shell.run_cell(code)
    assert result.success, result.error_in_exec
    assert shell.user_ns["loss"].dtype == torch.float32 and shell.user_ns["lm"].head.weight.grad is None


@pytest.mark.parametrize(
    "cell, expected",
    [
        # a loop: the forward pass of each step, after its zero_grad, before its backward
        (
            "for xb, yb in loader:\n    opt.zero_grad()\n    pred = model(xb)  # forward\n    l = crit(pred, yb)\n"
            "    l.backward()\n    opt.step()\n    sched.step()",
            'for xb, yb in loader:\n    opt.zero_grad()\n    with torch.autocast("cpu", dtype=torch.bfloat16):\n'
            "        pred = model(xb)  # forward\n        l = crit(pred, yb)\n    l.backward()\n    opt.step()\n"
            "    sched.step()",
        ),
        # the loss computed in the backward statement: named, then backward outside
        (
            "crit(model(xb), yb).backward()\nopt.step()",
            'with torch.autocast("cpu", dtype=torch.bfloat16):\n    loss = crit(model(xb), yb)\nloss.backward()\n'
            "opt.step()",
        ),
        # two models, two backwards: each forward in its own block
        (
            "a = f(x).sum()\na.backward()\nopt_f.step()\nb = g(x).sum()\nb.backward()\nopt_g.step()",
            'with torch.autocast("cpu", dtype=torch.bfloat16):\n    a = f(x).sum()\na.backward()\nopt_f.step()\n'
            'with torch.autocast("cpu", dtype=torch.bfloat16):\n    b = g(x).sum()\nb.backward()\nopt_g.step()',
        ),
    ],
)
def test_code_wraps_each_forward_pass_and_loss_only(cell, expected):
    code = autocast_code.rewrite(cell, device="cpu", trained=True)
    assert code == "import torch\n\n" + expected
    compile(code, "<amp>", "exec")


@pytest.mark.parametrize(
    "cell",
    [
        "with torch.autocast('cpu'):\n    y = m(x)",
        "with torch.cuda.amp.autocast():\n    y = m(x)",
        "from torch.amp import autocast\nwith autocast('cuda'):\n    y = m(x)",
        "@torch.autocast('cpu', dtype=torch.bfloat16)\ndef fwd(x):\n    return m(x)\ny = fwd(x)",
    ],
)
def test_autocast_in_the_cell_is_seen(cell):
    assert autocast_code.runs_under_autocast(autocast_code.parse(cell))
    assert not autocast_code.runs_under_autocast(autocast_code.parse("y = m(x)  # autocast later"))
