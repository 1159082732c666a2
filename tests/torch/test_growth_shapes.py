"""A loop that keeps a tensor per step is named with its culprit whatever
runs it: a function from another cell appending to a notebook list, a method
of a class from an imported module keeping `self.history`, `with
memprofile.profile()` and `@memprofile.profiled` in a script, `memprofile run
script.py`. (Inline in the cell: test_growth.py; HF Trainer.train():
test_hf_trainer.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import memprofile  # noqa: E402
from tests.cells import run_cell as _run  # noqa: E402

STEPS = 40
LOOP_MODULE = textwrap.dedent(f"""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(128, 256)


    def step():
        opt.zero_grad()
        out = model(x)
        out.pow(2).mean().backward()
        opt.step()
        return out


    class Loop:
        def __init__(self):
            self.history = []

        def run(self, steps={STEPS}):
            for _ in range(steps):
                out = step()
                self.history.append(out.detach())
""")
PER_STEP = 128 * 256 * 4  # 128 KiB: each step's output


def _named(p, container: str) -> str:
    note = next((w.message for w in p.warnings if w.code == "step_growth"), None)
    assert note is not None, [w.message for w in p.warnings]
    assert f"{container} gained {STEPS} torch.Tensor" in note, note
    s = next(s for s in p.suggestions if s.id == "kept_per_step")
    assert container in s.code and s.estimated_saving_bytes == pytest.approx(STEPS * PER_STEP, rel=0.05)
    return note


@pytest.fixture
def loops(tmp_path, monkeypatch):
    (tmp_path / "keeploops.py").write_text(LOOP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("keeploops", None)
    import keeploops  # type: ignore[import-not-found]

    return keeploops


def test_a_function_from_another_cell_appending_to_a_notebook_list(ip, fresh_store, loops):
    _run(
        ip,
        "from keeploops import step\nkept = []\n"
        f"def train():\n    for _ in range({STEPS}):\n        kept.append(step())\n",
    )
    p = _run(ip, "%%memprofile -q -n fn\ntrain()\n")
    _named(p, "kept")


def test_a_method_of_an_imported_class_keeping_self_history(ip, fresh_store, loops):
    _run(ip, "import keeploops\ntrainer = keeploops.Loop()\n")
    p = _run(ip, "%%memprofile -q -n method\ntrainer.run()\n")
    note = _named(p, "trainer.history")
    s = next(s for s in p.suggestions if s.id == "kept_per_step")
    assert s.code.startswith("del trainer.history[:]"), (note, s.code)


SCRIPT = textwrap.dedent(f"""
    import sys
    import memprofile
    import keeploops
    shape = sys.argv[1]
    kept = []

    def train():
        for _ in range({STEPS}):
            kept.append(keeploops.step())

    if shape == "with_block":
        with memprofile.profile(name="block"):
            train()
        p = memprofile.last()
    elif shape == "decorated":
        profiled = memprofile.profiled(name="decorated")(train)
        profiled()
        p = profiled.profile
    else:
        train()
        p = None
    if p is not None:
        note = next((w.message for w in p.warnings if w.code == "step_growth"), "")
        print("NOTE", note)
        print("SUGGESTIONS", [s.id for s in p.suggestions])
""")


@pytest.mark.parametrize("shape", ["with_block", "decorated"])
def test_profile_and_profiled_in_a_script(tmp_path, loops, shape):
    (tmp_path / "train.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "train.py"), shape], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"kept gained {STEPS} torch.Tensor" in done.stdout and "kept_per_step" in done.stdout, done.stdout


def test_memprofile_run_of_a_script(tmp_path, loops):
    (tmp_path / "train.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "memprofile", "run", "--out", str(tmp_path / "out"), "train.py", "plain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    p = memprofile.load(next((tmp_path / "out").glob("train*.memprofile.json.gz")))
    note = next(w.message for w in p.warnings if w.code == "step_growth")
    assert f"kept gained {STEPS} torch.Tensor" in note and "added at line" in note
