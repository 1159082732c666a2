"""The what-if engine beyond `%%memprofile`: a `with memprofile.profile():` block in a
notebook cell is re-executed for predictions and estimates as a cell is (its body, found
from the frame that opened it); a block inside a function, and a `@profiled` call, are
replayed and say so (their locals are not kept alive for it). Real torch, the session's
IPython shell."""

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


def test_a_profile_block_in_a_function_and_a_profiled_call_are_replayed_and_say_so(ip, fresh_store):
    # GIVEN the same loop in a function, once in a block and once decorated
    _run(ip, SETUP)
    body = "".join(f"        {line}\n" for line in STEPS.splitlines())
    _run(
        ip,
        "def train(xb, yb):\n    with memprofile.profile(name='inner') as inner:\n"
        + body
        + "    return inner\n"
        + "@memprofile.profiled(name='decorated')\ndef step(xb, yb):\n"
        + "".join(f"    {line}\n" for line in STEPS.splitlines()),
    )
    _run(ip, "inner = train(xb, yb)\nstep(xb, yb)\ndecorated = step.profile")
    for name in ("inner", "decorated"):
        p = ip.user_ns[name]
        predicted = p.predict("cpu", batch="4x")
        # THEN a replay, which says why: the function's locals are not kept for a re-run
        assert predicted.method == "replay", (name, predicted.notes)
        assert any("not at hand" in n for n in predicted.notes), predicted.notes
        assert not hasattr(p, "_step_source")


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
