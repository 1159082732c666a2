"""The profiler's own memory budget holds whatever runs the loop: a function
from another cell, a method of a class in an imported module, `with
memprofile.profile()`, `@memprofile.profiled`, `memprofile run -m`. Each runs
the same loop of small allocations with no model and no training step (the
shape the cell's line marks and module hooks never see), under a 512 MiB
budget: the detail ends on the budget, the process's high-water mark over the
start stays under it, and the resident memory comes back after."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import memprofile  # noqa: E402
from memprofile.capture.host import RssReader, release_free_memory  # noqa: E402
from tests.cells import run_cell  # noqa: E402

MiB = 2**20
BUDGET = 512 * MiB
#: Enough small allocations that recording them all would take gigabytes (~2 KB per op read back x20).
N = 300_000

LOOP_MODULE = f'''
import torch


def many(n={N}):
    for _ in range(n):
        a = torch.empty(64)


class Trainer:
    def run(self, n={N}):
        for _ in range(n):
            a = torch.empty(64) + 1
'''


@pytest.fixture
def loop_module(tmp_path, monkeypatch):
    (tmp_path / "tinyloops.py").write_text(LOOP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import tinyloops

    importlib.reload(tinyloops)
    yield tinyloops
    sys.modules.pop("tinyloops", None)


class _Measured:
    def __init__(self) -> None:
        self.before = self.after = 0


def _measure(run) -> tuple[memprofile.Profile, _Measured]:
    """Run a profile the way `run` does; the resident memory before and after."""
    release_free_memory()
    reader = RssReader()
    m = _Measured()
    try:
        m.before = reader.read()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        p = run()
        m.after = reader.read()
    finally:
        reader.close()
    return p, m


def _holds_the_budget(p: memprofile.Profile, m: _Measured) -> None:
    assert p.error is None and any(w.code == "budget_reached" for w in p.warnings), [w.code for w in p.warnings]
    assert p.capture["torch_detail_why"] == "budget"
    host = p.device("host")
    assert host.peak_bytes - m.before < BUDGET, (host.peak_bytes - m.before) / MiB
    assert m.after - m.before < 100 * MiB, (m.after - m.before) / MiB


def test_a_function_from_another_cell(ip, fresh_store):
    run_cell(ip, f"import torch\ndef many():\n    for _ in range({N}):\n        a = torch.empty(64)\n")
    p, m = _measure(lambda: run_cell(ip, "%%memprofile -q --budget 512M -n fn\nmany()\n"))
    _holds_the_budget(p, m)


def test_a_method_of_a_class_in_an_imported_module(ip, fresh_store, loop_module):
    run_cell(ip, "import tinyloops\ntrainer = tinyloops.Trainer()")
    p, m = _measure(lambda: run_cell(ip, "%%memprofile -q --budget 512M -n method\ntrainer.run()\n"))
    _holds_the_budget(p, m)


def test_a_with_block(fresh_store, loop_module):
    def run():
        with memprofile.profile(name="block", budget_bytes=BUDGET):
            loop_module.many()
        return memprofile.last()

    _holds_the_budget(*_measure(run))


def test_a_decorated_function(fresh_store, loop_module):
    step = memprofile.profiled(name="decorated", budget_bytes=BUDGET)(loop_module.many)

    def run():
        step()
        return step.profile

    _holds_the_budget(*_measure(run))


def test_memprofile_run_of_a_module(tmp_path):
    (tmp_path / "tinyloops.py").write_text(LOOP_MODULE + "\n\nif __name__ == '__main__':\n    many()\n")
    probe = textwrap.dedent("""
        import runpy, sys
        sys.argv = ["memprofile", "run", "--budget", "512M", "--out", sys.argv[1], "-n", "mod", "-m", "tinyloops"]
        from memprofile.cli import main
        code = main(sys.argv[1:])
        hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
        print("HWM", hwm)
        raise SystemExit(code)
    """)
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)
                                                       + ":" + ":".join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    saved = next((tmp_path / "out").glob("mod*.memprofile.json.gz"))
    p = memprofile.load(saved)
    assert any(w.code == "budget_reached" for w in p.warnings) and p.capture["torch_detail_why"] == "budget"
    hwm = int(done.stdout.split("HWM")[1].split()[0])
    assert hwm < 600 * MiB + BUDGET, hwm / MiB  # the interpreter, torch and the profiler's budget
    json.loads(gzip.decompress(saved.read_bytes()))  # a whole file


def test_a_few_large_allocations_in_a_function_keep_their_detail(ip, fresh_store):
    # GIVEN a function from another cell that allocates ~400 MB in a few ops, no model
    run_cell(ip, "import torch\ndef big():\n    x = torch.empty(2**26)\n    y = x + 1\n    z = y * 2\n"
                 "    return float(z[:4].sum())\n")
    p = run_cell(ip, "%%memprofile -q -n big\nbig()\n")
    # THEN nothing about events reached the budget: the detail covers it all
    assert "torch_detail_why" not in p.capture and p.peak_bytes > 500 * MiB
