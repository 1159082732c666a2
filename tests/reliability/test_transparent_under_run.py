"""Issue 27 rows 5, 9 and 14 under `memprofile run` (their cell forms are in
test_transparent_torch.py): a script's own torch profiler is complete, a
dead weakref.proxy or an object whose `__class__` raises in the script's
globals leaves the torch detail on, and a meta tensor keeps no memory. Each
script runs bare (`python script.py`) and under `memprofile run`: same exit
status and output."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import memprofile

pytest.importorskip("torch")


def _both(tmp_path, source: str):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    bare = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = tmp_path / "p.json"
    run = subprocess.run(
        [sys.executable, "-m", "memprofile", "run", "-o", str(out), str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert (run.returncode, run.stdout) == (bare.returncode, bare.stdout), run.stderr[-2000:]
    return memprofile.load(out)


def test_the_scripts_own_torch_profiler_is_complete_under_run(tmp_path):
    p = _both(
        tmp_path,
        """
        import torch
        from torch.profiler import ProfilerActivity, profile
        net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(3):
                net(torch.randn(16, 32)).sum().backward()
        names = sorted({e.key for e in prof.key_averages()})
        print(len(names), [n for n in names if "memprofile" in n])
    """,
    )
    assert "torch_user_profiler" in {n.code for n in p.warnings}


def test_objects_that_raise_when_looked_at_leave_the_detail_on_under_run(tmp_path):
    p = _both(
        tmp_path,
        """
        import weakref
        import torch

        class Gone:
            pass

        class Raising:
            @property
            def __class__(self):
                raise RuntimeError("no class for you")

        g = Gone()
        dead = weakref.proxy(g)
        del g
        odd = Raising()
        net = torch.nn.Linear(64, 64)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            net(torch.randn(8, 64)).sum().backward()
            opt.step()
        print("trained")
    """,
    )
    assert not [n for n in p.warnings if n.code == "collector_failed"], p.warnings
    assert any(layer.name == "net" for layer in p.layers) and p.ops


def test_a_meta_tensor_keeps_nothing_under_run(tmp_path):
    p = _both(
        tmp_path,
        """
        import torch
        big = torch.empty(2**40, device="meta")
        real = torch.ones(2**20)
        print(big.shape, real.sum().item())
    """,
    )
    assert all(k.bytes < 2**30 for k in p.kept), p.kept
    assert all((s.estimated_saving_bytes or 0) < 2**30 for s in p.suggestions)
    assert p.peak_bytes < 2**30
