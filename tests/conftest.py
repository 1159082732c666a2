"""Shared fixtures. Every test ends with no memprofile collector left running."""

from __future__ import annotations

import threading
import time

import pytest



def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("memprofile-")]


@pytest.fixture(autouse=True)
def no_collector_left_running():
    yield
    deadline = time.monotonic() + 2.0
    while _sampler_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _sampler_threads(), f"collector threads left running: {_sampler_threads()}"


@pytest.fixture
def fresh_store(monkeypatch):
    """An empty process-wide store for the test, the real one restored after."""
    from memprofile.jupyter import store

    empty = store.ProfileStore()
    monkeypatch.setattr(store, "STORE", empty)
    import memprofile.jupyter.magic as magic
    import memprofile.profiler  # noqa: F401  (imports STORE lazily from the module)

    monkeypatch.setattr(magic, "STORE", empty)
    return empty
