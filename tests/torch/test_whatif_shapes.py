"""The what-if engine beyond `%%memprofile`: a `with memprofile.profile():` block in a
notebook cell is re-executed for predictions and estimates as a cell is (its body, found
from the frame that opened it); a block inside a function with the locals it reads, and a
`@profiled` call with its arguments, held weakly (whatif/call.py). Real torch, the
session's IPython shell."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.cells import run_cell as _run  # noqa: E402

pytestmark = pytest.mark.usefixtures("names_back")

SETUP = """
import torch, memprofile
from torch import nn
import torch.nn.functional as F
torch.manual_seed(0)
wide = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
adam = torch.optim.Adam(wide.parameters())
def batch_of(n):
    return torch.randn(n, 256), torch.randint(0, 10, (n,))
xb, yb = batch_of(64)
calls = []
"""
STEPS = """\
for _ in range(2):
    adam.zero_grad()
    F.cross_entropy(wide(xb), yb).backward()
    adam.step()
    calls.append(1)
"""


def _block(name: str) -> str:
    return f"with memprofile.profile(name={name!r}) as {name}:\n" + "".join(
        f"    {line}\n" for line in STEPS.splitlines()
    )


def test_a_profile_block_in_a_cell_is_predicted_by_fake_execution(ip, fresh_store):
    # GIVEN a training loop in a `with memprofile.profile()` block of a notebook cell
    _run(ip, SETUP)
    _run(ip, STEPS)  # Adam's state exists, as in a notebook that trained before
    _run(ip, _block("small"))
    small = ip.user_ns["small"]
    # THEN the block ran once (two steps), and its run is re-executed on fake tensors
    assert len(ip.user_ns["calls"]) == 4
    predicted = small.predict("cpu", batch="4x")
    assert predicted.method == "fake execution", predicted.notes
    assert len(ip.user_ns["calls"]) == 4  # predicting appended to no list of the notebook's
    assert all(s.estimate_method == "fake execution" for s in small.suggestions if s.id == "optimizer_state")
    # AND the prediction is the real run's peak at 4x the batch (before: replayed, "not at hand")
    _run(ip, "xb, yb = batch_of(256)")
    _run(ip, _block("large"))
    real = ip.user_ns["large"].peak_device.peak_bytes
    assert abs(predicted.allocated_peak_bytes - real) <= 0.03 * real, (predicted.allocated_peak_bytes, real)


def _function_shapes(ip):
    """The loop in a function, once in a block and once decorated (its args and locals are the data)."""
    _run(ip, SETUP)
    _run(ip, STEPS)  # Adam's state exists, as in a notebook that trained before
    body = "".join(f"        {line}\n" for line in STEPS.splitlines())
    _run(
        ip,
        "def train(xb, yb):\n    with memprofile.profile(name='inner') as inner:\n"
        + body
        + "    return inner\n"
        + "@memprofile.profiled(name='decorated')\ndef step(xb, yb):\n"
        + "".join(f"    {line}\n" for line in STEPS.splitlines()),
    )


@pytest.mark.parametrize("shape", ["inner", "decorated"])
def test_a_profile_block_in_a_function_and_a_profiled_call_are_predicted_by_fake_execution(ip, fresh_store, shape):
    # GIVEN the loop in a function: a block in it, or the function decorated; its data are arguments
    _function_shapes(ip)
    _run(ip, "inner = train(*batch_of(64))\nstep(*batch_of(64))\ndecorated = step.profile")
    assert len(ip.user_ns["calls"]) == 2 + 4
    p = ip.user_ns[shape]
    # WHEN it is predicted at 4x the batch, after the call returned and its batch was dropped
    predicted = p.predict("cpu", batch="4x")
    # THEN the call is re-executed on fake tensors (before: "replay", its locals "not at hand"),
    # appending to no list of the notebook's and moving no real weight
    assert predicted.method == "fake execution", predicted.notes
    assert len(ip.user_ns["calls"]) == 6
    # AND it is the real run's peak at 4x the batch
    _run(ip, f"inner = train(*batch_of(256))\nstep(*batch_of(256))\ndecorated = step.profile\nlarge = {shape}")
    real = ip.user_ns["large"].peak_device.peak_bytes
    assert abs(predicted.allocated_peak_bytes - real) <= 0.03 * real, (predicted.allocated_peak_bytes, real)
    # AND every run's suggestions are measured by the engine: once per shape (a step called once per
    # training step does not run the engine after each), a run with shapes measured before takes those
    for run in (p, ip.user_ns["large"]):
        mine = [s for s in run.suggestions if s.id == "optimizer_state"]
        assert mine and all(s.estimate_method == "fake execution" for s in mine), [s.evidence for s in mine]
        assert "whatif_s" in run.capture  # a new shape: the engine ran
    _run(ip, f"inner = train(*batch_of(256))\nstep(*batch_of(256))\ndecorated = step.profile\nagain = {shape}")
    again = ip.user_ns["again"]
    assert "whatif_s" not in again.capture  # the shapes of the run before: its outcomes, no engine
    same = [s.estimated_saving_bytes for s in again.suggestions if s.estimate_method == "fake execution"]
    assert same == [
        s.estimated_saving_bytes for s in ip.user_ns["large"].suggestions if s.estimate_method == "fake execution"
    ]
    assert same


def test_a_profiled_call_keeps_nothing_alive_and_says_when_its_arguments_are_gone(ip, fresh_store):
    # GIVEN a decorated step called with a model and a batch made for the call only
    import gc
    import weakref

    _function_shapes(ip)
    _run(
        ip,
        "@memprofile.profiled(name='own')\ndef own_model(net, xb):\n    return net(xb).sum().item()\n"
        "tmp = nn.Linear(256, 4096)\nown_model(tmp, torch.randn(512, 256))\n",
    )
    p = ip.user_ns["own_model"].profile
    gone = weakref.ref(ip.user_ns["tmp"])
    assert p.predict("cpu", batch="2x").method == "fake execution"
    # WHEN the notebook drops the model
    _run(ip, "del tmp")
    gc.collect()
    # THEN the profile did not keep it alive, and a prediction replays and says why
    assert gone() is None
    again = p.predict("cpu", batch="2x")
    assert again.method == "replay"
    assert any("no longer exists" in n for n in again.notes), again.notes


def test_a_profiled_function_of_an_imported_module_is_predicted(ip, fresh_store, tmp_path, monkeypatch):
    # GIVEN a decorated training step in the user's own module, imported by the notebook
    (tmp_path / "trainlib.py").write_text(
        "import memprofile, torch\nimport torch.nn.functional as F\n"
        "@memprofile.profiled(name='lib')\n"
        "def fit(model, opt, xb, yb, *, steps=2):\n"
        "    for _ in range(steps):\n"
        "        opt.zero_grad()\n"
        "        F.cross_entropy(model(xb), yb).backward()\n"
        "        opt.step()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _function_shapes(ip)
    _run(ip, "import trainlib\ntrainlib.fit(wide, adam, xb, yb)\nlib = trainlib.fit.profile")
    predicted = ip.user_ns["lib"].predict("cpu", batch="4x")
    assert predicted.method == "fake execution", predicted.notes
    _run(ip, "trainlib.fit(wide, adam, *batch_of(256))\nlarge = trainlib.fit.profile")
    real = ip.user_ns["large"].peak_device.peak_bytes
    assert abs(predicted.allocated_peak_bytes - real) <= 0.03 * real, (predicted.allocated_peak_bytes, real)


def test_a_block_that_returns_from_its_function_is_replayed_and_says_why(ip, fresh_store):
    _run(ip, SETUP)
    _run(
        ip,
        "def early(xb):\n    with memprofile.profile(name='early') as early_p:\n"
        "        out = wide(xb).sum()\n        if out.item() > 1e9:\n            return None\n"
        "    return early_p\n",
    )
    _run(ip, "early_p = early(xb)")
    predicted = ip.user_ns["early_p"].predict("cpu", batch="2x")
    assert predicted.method == "replay"
    assert any("return" in n and "cannot run again" in n for n in predicted.notes), predicted.notes


def test_a_profile_block_in_a_plain_script_is_never_re_executed(tmp_path):
    # GIVEN a script (python train.py, no IPython) with a training block at its top level that
    # writes a file and counts its runs
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import torch, memprofile\nfrom torch import nn\n"
        "net = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))\n"
        "opt = torch.optim.Adam(net.parameters())\nruns = []\n"
        "with memprofile.profile(name='script') as p:\n"
        "    for _ in range(2):\n"
        "        opt.zero_grad(); net(torch.randn(256, 64)).sum().backward(); opt.step()\n"
        "    runs.append(1)\n"
        "print('RERUN', hasattr(p, '_step_source'), len(runs))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    # THEN nothing in it runs again after the block (it may read its data or write its files)
    assert "RERUN False 1" in out.stdout, out.stdout + out.stderr


def test_a_malformed_budget_setting_keeps_the_default():
    from memprofile.whatif.estimate import _budget_from_environment

    os_environ = __import__("os").environ
    saved = os_environ.get("MEMPROFILE_WHATIF_BUDGET_S")
    try:
        os_environ["MEMPROFILE_WHATIF_BUDGET_S"] = "five"
        assert _budget_from_environment() == 5.0
        os_environ["MEMPROFILE_WHATIF_BUDGET_S"] = "12.5"
        assert _budget_from_environment() == 12.5
    finally:
        if saved is None:
            os_environ.pop("MEMPROFILE_WHATIF_BUDGET_S", None)
        else:
            os_environ["MEMPROFILE_WHATIF_BUDGET_S"] = saved


def test_a_profiled_step_re_executed_for_estimates_trains_as_bare(ip, fresh_store):
    # GIVEN one training step with dropout, decorated and bare, from the same seed and weights
    _run(
        ip,
        """
import copy, torch, memprofile
from torch import nn
import torch.nn.functional as F
torch.manual_seed(0)
base = nn.Sequential(nn.Linear(64, 512), nn.Dropout(0.5), nn.ReLU(), nn.Linear(512, 10))
def make():
    net = copy.deepcopy(base)
    return net, torch.optim.Adam(net.parameters())
def step(net, opt, xb, yb, log):
    opt.zero_grad()
    loss = F.cross_entropy(net(xb), yb)
    loss.backward()
    opt.step()
    log.append(float(loss))
profiled_step = memprofile.profiled(name='t')(step)
def train(fn):
    torch.manual_seed(1)
    net, opt = make()
    log, predicted = [], []
    for _ in range(3):
        fn(net, opt, torch.randn(128, 64), torch.randint(0, 10, (128,)), log)
        if fn is profiled_step:  # between steps: the call re-executed on fake tensors
            predicted.append(fn.profile.predict("cpu", batch="2x").method)
    return net, opt, log, torch.rand(3), predicted
""",
    )
    _run(ip, "bare = train(step)\nwith_engine = train(profiled_step)")
    bare, profiled = ip.user_ns["bare"], ip.user_ns["with_engine"]
    # THEN the engine re-executed each call, and the run is the bare run: the same losses,
    # weights, Adam state, and random numbers after it
    assert profiled[4] == ["fake execution"] * 3
    assert bare[2] == profiled[2]
    for a, b in zip(bare[0].parameters(), profiled[0].parameters()):
        assert torch.equal(a, b)
    for sa, sb in zip(bare[1].state.values(), profiled[1].state.values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(bare[3], profiled[3])


@pytest.mark.parametrize("shape", ["cell", "decorated"])
def test_a_template_is_not_measured_as_saving_nothing(ip, fresh_store, shape):
    # GIVEN a CNN trained by a function of another cell: amp's code is a template ("...": the
    # forward is the function's), which, run below the cell as it is, changes nothing
    _run(
        ip,
        """
import torch, memprofile
from torch import nn
import torch.nn.functional as F
torch.manual_seed(0)
cnn = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                    nn.Flatten(), nn.Linear(64 * 32 * 32, 10))
sgd = torch.optim.SGD(cnn.parameters(), lr=0.01)
def fit(xb, yb):
    for _ in range(2):
        sgd.zero_grad()
        loss = F.cross_entropy(cnn(xb), yb)
        loss.backward()
        sgd.step()
decorated_fit = memprofile.profiled(name='decorated')(fit)
xb, yb = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
fit(xb, yb)
""",
    )
    if shape == "cell":
        _run(ip, "%%memprofile --name cell\nfit(xb, yb)")
        p = memprofile_last(ip)
    else:
        _run(ip, "decorated_fit(xb, yb)")
        p = ip.user_ns["decorated_fit"].profile
    # THEN amp stays, with its recorded run's estimate (a decorated call's was dropped: its `...`
    # template, run below, saved nothing)
    amp = [s for s in p.suggestions if s.id == "amp"]
    assert amp, [s.id for s in p.suggestions]
    assert amp[0].estimate_method == "replay" and amp[0].estimated_saving_bytes > 0
    assert "Estimated from the recorded run's timeline: its code is a template" in amp[0].evidence


def memprofile_last(ip):
    import memprofile

    return memprofile.last()


def test_a_call_with_a_config_record_is_predicted_and_the_record_left_as_it_was(ip, fresh_store):
    # GIVEN a decorated train(model, opt, data, cfg) whose config (a dataclass of plain values, as
    # argparse's Namespace is) it reads and writes
    _run(ip, SETUP)
    _run(ip, STEPS)
    _run(
        ip,
        """
import dataclasses
@dataclasses.dataclass
class Config:
    steps: int = 2
    clip: float = 1.0
    seen: int = 0
@memprofile.profiled(name='cfg')
def fit(model, opt, xb, yb, cfg):
    for _ in range(cfg.steps):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        cfg.seen += 1
cfg = Config()
fit(wide, adam, xb, yb, cfg)
""",
    )
    p = ip.user_ns["fit"].profile
    # THEN it is re-executed (before: "the cell uses `cfg` (a Config): running it again could change it")
    predicted = p.predict("cpu", batch="4x")
    assert predicted.method == "fake execution", predicted.notes
    # AND the notebook's config counts the real steps only
    assert ip.user_ns["cfg"].seen == 2


def test_a_block_calling_a_closure_over_its_model_is_predicted_and_the_model_left_as_it_was(ip, fresh_store):
    # GIVEN a block in a function that calls a training step defined inside that function,
    # closing over the function's model and optimizer
    _run(
        ip,
        """
import torch, memprofile
def main():
    model = torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    opt = torch.optim.Adam(model.parameters())
    def train_step(x):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    train_step(torch.randn(64, 256))
    with memprofile.profile(name='closure') as p:
        train_step(torch.randn(64, 256))
    return p, model, opt, train_step
closure_p, closure_model, closure_opt, closure_step = main()
""",
    )
    p, model, opt, step = (ip.user_ns[k] for k in ("closure_p", "closure_model", "closure_opt", "closure_step"))
    # WHEN it is predicted (the closure is run with copies in its cells)
    predicted = p.predict("cpu", batch="4x")
    assert predicted.method == "fake execution", predicted.notes
    # THEN the real model's gradients and Adam's state are real tensors still, and it trains
    from torch._subclasses.fake_tensor import FakeTensor

    assert not any(isinstance(q.grad, FakeTensor) for q in model.parameters())
    assert not any(isinstance(v, FakeTensor) for s in opt.state.values() for v in s.values())
    before = model[0].weight.detach().clone()
    step(torch.randn(64, 256))
    assert not torch.equal(before, model[0].weight)


def test_a_run_that_reaches_a_model_it_cannot_copy_leaves_it_as_it_was(ip, fresh_store, tmp_path, monkeypatch):
    # GIVEN a cell calling a training step of the user's module, over that module's own model
    # and optimizer (the copy cannot reach them: the fake run writes into them, and is refused)
    (tmp_path / "modtrain.py").write_text(
        "import torch\nmodel = torch.nn.Linear(256, 512)\nopt = torch.optim.Adam(model.parameters())\n"
        "def step(x):\n    opt.zero_grad()\n    model(x).sum().backward()\n    opt.step()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _run(ip, "import modtrain, torch, memprofile\nmodtrain.step(torch.randn(64, 256))")
    _run(ip, "%%memprofile -q -n modtrain\nmodtrain.step(torch.randn(64, 256))")
    import memprofile

    predicted = memprofile.last().predict("cpu", batch="2x")
    assert predicted.method == "replay"
    # THEN the module's model keeps its real gradients and Adam its real state (before: fake ones)
    from torch._subclasses.fake_tensor import FakeTensor

    mod = ip.user_ns["modtrain"]
    assert not any(isinstance(q.grad, FakeTensor) for q in mod.model.parameters())
    assert not any(isinstance(v, FakeTensor) for s in mod.opt.state.values() for v in s.values())
    before = mod.model.weight.detach().clone()
    _run(ip, "modtrain.step(torch.randn(64, 256))")
    assert not torch.equal(before, mod.model.weight)
