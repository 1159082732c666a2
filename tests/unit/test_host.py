"""The framework-free collector against the real process."""

from __future__ import annotations

import statistics
import threading
import time
from array import array

import numpy as np
import pytest

import memprofile
from memprofile.capture.host import HostCollector, halve_keeping_extremes

#: The sampler's timing and the process's own resident memory: run where no other test loads the cores.
pytestmark = pytest.mark.serial

MiB = 2**20


def test_samples_at_least_100_hz_while_idle():
    c = HostCollector(interval_s=0.005)
    c.start()
    time.sleep(0.4)
    raw = c.stop()
    (dev,) = raw.devices
    gaps = [b - a for a, b in zip(dev.t, dev.t[1:])]
    # The median gap is what the rate is; single late samples are the scheduler's.
    assert statistics.median(gaps) <= 0.010, statistics.median(gaps)
    assert dev.t == sorted(dev.t)


def test_a_freed_allocation_still_shows_as_the_peak(fresh_store):
    # GIVEN a block that allocates 256 MiB, touches it, and frees it again
    with memprofile.profile(name="spike", torch=False, tensorflow=False) as p:
        buf = np.ones(256 * MiB // 8)
        time.sleep(0.05)
        del buf
        time.sleep(0.05)
    # THEN the peak covers the allocation, the end does not
    host = p.device("host")
    assert host.peak_bytes - host.baseline_bytes >= 250 * MiB
    assert host.end_bytes - host.baseline_bytes < 64 * MiB
    assert p.peak.device == "host" and 0 <= p.peak.time_s <= p.duration_s
    assert p.timelines[0].recorded_points >= len(p.timelines[0].t) >= 2
    assert memprofile.last() is p
    assert "numpy" in {f.name for f in p.frameworks}
    assert p.capture["python"] and p.capture["collectors"] == "host,namespace"


def test_peak_between_samples_comes_from_the_os_counter(fresh_store):
    # GIVEN a sampling interval far longer than the spike
    with memprofile.profile(name="fast spike", host_interval_s=5.0, torch=False, tensorflow=False) as p:
        buf = np.ones(200 * MiB // 8)
        del buf
    host = p.device("host")
    # THEN the OS high-water mark still reports it, and the profile says so
    assert host.peak_bytes - host.baseline_bytes >= 190 * MiB
    assert any(n.code == "peak_between_samples" for n in p.warnings)
    assert "VmHWM" in p.capture["host_peak_from"]


def test_stop_leaves_no_thread_and_start_twice_is_refused():
    c = HostCollector()
    c.start()
    with pytest.raises(RuntimeError):
        c.start()
    c.stop()
    assert not [t for t in threading.enumerate() if t.name == "memprofile-host-sampler"]
    with pytest.raises(RuntimeError):
        c.stop()


def test_bounded_samples_keep_the_maximum():
    c = HostCollector(interval_s=0.0005, max_samples=64)
    c.start()
    time.sleep(0.2)
    raw = c.stop()
    assert len(raw.devices[0].live_bytes) <= 64
    assert raw.devices[0].recorded_points > 64
    assert any(code == "host_samples_reduced" for code, _ in raw.notes)


def test_halving_keeps_the_extremes():
    t = array("d", range(11))
    v = array("q", [5, 1, 9, 2, 3, 8, 0, 0, 7, 1, 4])
    ht, hv = halve_keeping_extremes(t, v)
    assert max(hv) == 9 and hv[0] == 5 and list(ht) == sorted(ht)
    assert len(hv) <= 7


@pytest.mark.parametrize("bad", [{"interval_s": 0}, {"interval_s": -1}, {"max_samples": 3}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        HostCollector(**bad)


def test_block_that_raises_keeps_its_profile_and_reraises(fresh_store):
    with pytest.raises(KeyError):
        with memprofile.profile(name="boom") as p:
            {}["missing"]
    assert p.error.type == "KeyError" and "missing" in p.error.message
    assert "memprofile/profiler.py" not in p.error.traceback
    assert fresh_store.last() is p


def test_a_nested_profile_does_not_blind_the_outer_one(fresh_store):
    # GIVEN an outer profile whose spike happens before an inner profile starts
    with memprofile.profile(name="outer", host_interval_s=5.0, torch=False, tensorflow=False) as outer:
        buf = np.ones(200 * MiB // 8)
        del buf
        with memprofile.profile(name="inner", torch=False, tensorflow=False) as inner:
            time.sleep(0.01)
    # THEN the outer still reports the spike, and the inner does not claim it
    assert outer.device("host").peak_bytes - outer.device("host").baseline_bytes >= 190 * MiB
    assert inner.device("host").peak_bytes - inner.device("host").baseline_bytes < 50 * MiB
    assert [p.name for p in fresh_store.all()] == ["inner", "outer"]


def test_rss_reader_agrees_with_psutil_and_falls_back_to_it(monkeypatch):
    import os

    import psutil

    from memprofile.capture.host import RssReader

    fast = RssReader()
    assert abs(fast.read() - psutil.Process().memory_info().rss) < 8 * MiB
    fast.close()

    def no_proc(path, *a, **kw):
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "open", no_proc)
    slow = RssReader()
    assert abs(slow.read() - psutil.Process().memory_info().rss) < 8 * MiB
