"""Issue 14: two profiles at once, nested profiles, an interrupt while a
profile stops, and what a module-level profile keeps. Each case crashed,
lost the profile or was silently wrong before (see issue 14's table)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import memprofile
from memprofile.capture import session
from tests.kernels import kernel_env

ROOT = Path(__file__).resolve().parents[2]
torch = pytest.importorskip("torch")


def _codes(profile) -> list[str]:
    return [n.code for n in profile.warnings]


def _message(profile, code: str) -> str:
    return next(n.message for n in profile.warnings if n.code == code)


def _train(model, x, steps: int = 2) -> None:
    for _ in range(steps):
        model(x).sum().backward()


# -- 1. two threads, each profiling torch -----------------------------------

TWO_THREADS = """
import threading, torch, memprofile
from torch import nn

model, x = nn.Linear(512, 512), torch.randn(64, 512)
first_inside, second_done = threading.Event(), threading.Event()
results = {}

def first():
    with memprofile.profile(name="first", store=False) as p:
        first_inside.set()
        for _ in range(3):
            model(x).sum().backward()
        second_done.wait()  # the second thread's whole profile runs inside this one
    results["first"] = p

def second():
    first_inside.wait()
    with memprofile.profile(name="second", store=False) as p:
        for _ in range(3):
            model(x).sum().backward()
    results["second"] = p
    second_done.set()

threads = [threading.Thread(target=first), threading.Thread(target=second)]
for t in threads: t.start()
for t in threads: t.join()
a, b = results["first"], results["second"]
print("first", a.peak_device.name, len(a.ops), [n.code for n in a.warnings])
print("inner", [n.message for n in a.warnings if n.code == "inner_profile"])
print("second", [d.name for d in b.devices], len(b.ops), [n.code for n in b.warnings], b.capture.get("nested_in"))
print("threads", [t.name for t in threading.enumerate() if t.name.startswith("memprofile-")])
"""


def test_two_threads_profiling_torch_do_not_crash():
    """Bare torch.profiler in two threads segfaults: the second thread's
    profile records process memory only and says which profile owned torch."""
    run = subprocess.run(
        [sys.executable, "-c", TWO_THREADS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    assert out["first"].startswith("cpu ") and int(out["first"].split()[1]) > 0
    assert "inner_profile" in out["first"] and "in thread Thread-2 (second)" in out["inner"]
    assert out["second"].startswith("['host'] 0 ") and "nested_profile" in out["second"]
    assert "profile 'first' (thread Thread-1 (first))" in out["second"]
    assert out["threads"] == "[]"


# -- 2. nested profiles ---------------------------------------------------------


def test_nested_profile_leaves_the_outer_right():
    """Before: the inner torch profiler ended the outer's session, so the
    outer had 0 ops and its peak on host. Now the outer is as un-nested."""
    model, x = torch.nn.Linear(256, 256), torch.randn(32, 256)
    with memprofile.profile(name="alone", store=False) as alone:
        _train(model, x)
        _train(model, x)
    with memprofile.profile(name="outer", store=False) as outer:
        _train(model, x)
        with memprofile.profile(name="inner", store=False) as inner:
            _train(model, x)
    assert outer.peak_device.name == alone.peak_device.name == "cpu"
    assert {o.name for o in outer.ops} == {o.name for o in alone.ops}
    assert outer.peak_bytes == alone.peak_bytes
    assert _message(outer, "inner_profile").startswith("profile 'inner' ran from ")
    assert "nested_profile" not in _codes(outer)
    # the inner: process memory only, and it says why and where
    assert [d.name for d in inner.devices] == ["host"] and not inner.ops
    assert "profile 'outer'" in _message(inner, "nested_profile") and inner.capture["nested_in"].startswith(
        "profile 'outer'"
    )
    assert not torch.autograd.profiler._is_profiler_enabled


def test_after_nesting_the_next_profile_owns_torch_again():
    model, x = torch.nn.Linear(64, 64), torch.randn(8, 64)
    with memprofile.profile(name="outer", store=False):
        with memprofile.profile(name="inner", store=False):
            pass
    with memprofile.profile(name="next", store=False) as p:
        _train(model, x)
    assert p.ops and "nested_profile" not in _codes(p) and session.current() is None


# -- 4. a module-level profile keeps what the block binds ----------------------


def test_module_level_profile_sees_arrays_bound_in_the_block():
    """Before: the namespace was a copy made at the start, so `made` was missing from p.kept."""
    module = {"__name__": "user_module", "memprofile": memprofile, "torch": torch}
    code = textwrap.dedent("""
        with memprofile.profile(name="module", store=False) as p:
            made = torch.ones(2**20)
    """)
    exec(compile(code, "user_module.py", "exec"), module)
    assert [k.name for k in module["p"].kept] == ["made"]


def test_function_profile_sees_locals_bound_in_the_block_and_live_globals():
    def work():
        with memprofile.profile(name="function", store=False) as p:
            local = torch.ones(2**20)
            globals()["GLOBAL_MADE"] = torch.ones(2**19 * 3)
        del local
        return p

    try:
        kept = {k.name for k in work().kept}
    finally:
        globals().pop("GLOBAL_MADE", None)
    assert {"local", "GLOBAL_MADE"} <= kept


# -- 2. nested in a %%memprofile cell, in a real kernel -------------------------

KERNEL_SETUP = """\
import torch, memprofile
from torch import nn
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 64)
"""


@pytest.mark.kernel
def test_profile_nested_in_a_profiled_cell(tmp_path):
    from tests.integration.test_kernel import _run

    nb = _run(
        [
            "%load_ext memprofile",
            KERNEL_SETUP,
            "%%memprofile --name cell\nmodel(x).sum().backward()\n"
            "with memprofile.profile(name='inner') as q:\n    model(x).sum().backward()\n",
            "p = memprofile.last()\n"
            "(p.name, p.peak_device.name, len(p.ops) > 0, [n.code for n in p.warnings], "
            "[d.name for d in q.devices], [n.code for n in q.warnings])",
        ],
        tmp_path,
    )
    result = nb.cells[3].outputs[-1]["data"]["text/plain"]
    assert result == ("('cell', 'cpu', True, ['inner_profile'], ['host'], ['nested_profile'])")


# -- 3. a kernel interrupt while the profile stops ------------------------------

STOPPING_CELL = """\
%%memprofile --name long --detail-steps all
for _ in range(3000):
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
"""

# A probe, not a mock: it tells the test (by a file) that the profiler has
# begun to stop, and the real stop runs on.
PROBE = """\
import pathlib, memprofile.profiler
_finish = memprofile.profiler.Profiler._finish
def _stopping(self, *args, **kwargs):
    pathlib.Path({marker!r}).touch()
    return _finish(self, *args, **kwargs)
memprofile.profiler.Profiler._finish = _stopping
"""

AFTER = """\
import threading
p = memprofile.last()
with memprofile.profile(name="next") as n:
    y = torch.ones(2**18)
print(repr((p.name, [w.code for w in p.warnings], p.peak_device.name,
            [t.name for t in threading.enumerate() if t.name.startswith("memprofile-")],
            n.capture["host_peak_from"])))
"""


def _execute(client, code: str, on_stream=None, timeout: float = 300) -> tuple[dict, str]:
    """Run `code`; (the execute_reply's content, what it printed). `on_stream`
    is called with each piece of printed text as it comes."""
    msg_id = client.execute(code)
    printed = []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
            if on_stream is not None:
                on_stream(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    return reply["content"], "".join(printed)


@pytest.mark.kernel
def test_interrupt_while_stopping_stores_the_profile_and_stops_every_collector(tmp_path):
    """Before: no profile stored, the traceback ended inside torch, the host
    sampler kept running and later profiles stopped resetting the OS peak."""
    from jupyter_client.manager import start_new_kernel

    marker = tmp_path / "stopping"
    manager, client = start_new_kernel(kernel_name="python3", env=kernel_env())
    try:
        setup = "%load_ext memprofile\n" + KERNEL_SETUP + PROBE.format(marker=str(marker))
        assert _execute(client, setup)[0]["status"] == "ok"
        interrupter = threading.Thread(target=_interrupt_when, args=(marker, manager), daemon=True)
        interrupter.start()
        reply, _ = _execute(client, STOPPING_CELL)
        interrupter.join()
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        assert not any("torch" in line for line in reply["traceback"][-2:])
        reply, printed = _execute(client, AFTER)
        assert reply["status"] == "ok", reply
        name, codes, device, threads, peak_from = eval(printed.strip())
        assert name == "long" and "interrupted_while_stopping" in codes and device == "cpu"
        assert threads == []
        assert "reset" in peak_from  # the next profile reset the OS peak again
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _interrupt_when(marker: Path, manager) -> None:
    """Interrupt the kernel once the profiler has begun to stop (its stop
    takes a second or more of torch events; the poll is 5 ms)."""
    stop_polling = threading.Event()
    while not marker.exists() and manager.is_alive():
        stop_polling.wait(0.005)
    manager.interrupt_kernel()
