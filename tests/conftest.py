"""Shared fixtures. Every test ends with no memprofile collector left running."""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import threading
import time

import pytest

import tests.hypothesis_profiles  # noqa: F401  (loads the dev or ci profile)

#: Folders whose every test takes seconds (a framework at work, a subprocess, a
#: kernel, a browser): the full tier's. tests/unit and tests/imports are fast
#: but for the tests marked `slow` one by one.
SLOW_FOLDERS = {"torch", "tensorflow", "distributed", "fixes", "integration", "reliability", "ui"}
#: A test with one of these marks is slow whatever its folder.
SLOW_MARKS = {"kernel", "ui", "package"}


def pytest_collection_modifyitems(config, items):
    """Every test gets its tier: `slow` by folder or mark (`-m "not slow"` is
    the fast tier, ./scripts/test.sh --fast); a browser test shares its
    worker's JupyterLab and Chromium under xdist (one group)."""
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        marks = {m.name for m in item.iter_markers()}
        if (len(parts) > 1 and parts[0] == "tests" and parts[1] in SLOW_FOLDERS) or marks & SLOW_MARKS:
            item.add_marker(pytest.mark.slow)
        if "ui" in marks:
            item.add_marker(pytest.mark.xdist_group("ui"))


# TensorFlow turns oneDNN on by itself on CPUs with AVX-512 VNNI/AMX, and its
# allocator then records no event for blocks under 256 KiB. The tests pin the
# plain CPU allocator so they check the same thing on every machine (kernels
# and JupyterLab started by the tests inherit it); the oneDNN allocator has its
# own tests, which set TF_ENABLE_ONEDNN_OPTS=1 in a subprocess.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# The what-if engine's time budget after a cell (5 s) is for users; the tests measure what the
# engine gives, not how loaded the machine is (under load a budget cut left estimates replayed).
os.environ.setdefault("MEMPROFILE_WHATIF_BUDGET_S", "120")


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("memprofile-")]


def _trace_dirs(everyone: bool = False) -> set[str]:
    """TF trace directories of this process or of one that has ended (a kernel
    the test ran): not those of other live processes (another test run).
    `everyone`: all of them (what was there before a test is not its own)."""
    from memprofile.capture.tensorflow import TRACE_DIR_PREFIX

    found = set()
    for parent in (tempfile.gettempdir(), "/dev/shm"):
        for d in glob.glob(os.path.join(parent, TRACE_DIR_PREFIX + "*")):
            pid = os.path.basename(d)[len(TRACE_DIR_PREFIX) :].split("-")[0]
            if everyone or not pid.isdigit() or int(pid) == os.getpid() or not os.path.exists(f"/proc/{pid}"):
                found.add(d)
    return found


@pytest.fixture(autouse=True)
def no_collector_left_running():
    before = _trace_dirs(everyone=True)  # a dead run's directories from earlier are not this test's
    yield
    deadline = time.monotonic() + 2.0
    while _sampler_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _sampler_threads(), f"collector threads left running: {_sampler_threads()}"
    torch = sys.modules.get("torch")
    if torch is not None:  # only tests that imported torch can have left torch state
        import torch.nn.modules.module as hooks
        import torch.optim.optimizer as optim

        assert not hooks._global_forward_pre_hooks and not hooks._global_forward_hooks, "module hooks left"
        assert not optim._global_optimizer_pre_hooks and not optim._global_optimizer_post_hooks, "optimizer hooks left"
        enabled = getattr(torch.autograd.profiler, "_is_profiler_enabled", None)  # torch >= 2.5
        if enabled is None:
            enabled = torch.autograd._profiler_enabled()
        assert not enabled, "torch profiler left running"
    if "tensorflow" in sys.modules:
        from tensorflow.python.profiler import trace

        # (TF >= 2.17: a function, traceme_enabled; TF 2.16: a flag)
        enabled = trace.enabled() if callable(trace.enabled) else trace.enabled
        assert not enabled, "TensorFlow profiler left running"
        keras = sys.modules.get("keras")
        if keras is not None:
            assert not hasattr(keras.layers.Layer.__call__, "__memprofile_original__"), "Keras layer scopes left"
        tf = sys.modules["tensorflow"]
        assert not hasattr(tf.GradientTape.gradient, "__memprofile_original__"), "GradientTape scope left"
        leftovers = sorted(_trace_dirs() - before)
        assert not leftovers, f"TensorFlow trace directories left: {leftovers}"


@pytest.fixture
def fresh_store(monkeypatch):
    """An empty process-wide store for the test, the real one restored after
    (everything that stores or reads profiles looks up `store.STORE` when it does)."""
    from memprofile import store

    empty = store.ProfileStore()
    monkeypatch.setattr(store, "STORE", empty)
    return empty


@pytest.fixture
def names_back(ip):
    """The shell is the session's: what a test's cells bind must not be the next test's baseline."""
    before = set(ip.user_ns)
    yield ip
    for name in set(ip.user_ns) - before:
        ip.user_ns.pop(name, None)


@pytest.fixture(scope="session")
def ip():
    """The process's one IPython test shell, with the extension loaded."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython() or TerminalInteractiveShell.instance()
    shell.run_line_magic("load_ext", "memprofile")
    return shell
