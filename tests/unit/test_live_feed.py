"""The live feed's state (capture/live.py): the growth projection, the near-capacity warning,
the decimation that keeps peaks, the sinks, and messages the wire's codec reads."""

from __future__ import annotations

import json
import time

import pytest

from memprofile.capture import live
from memprofile.model.codec import decode
from memprofile.model.wire import LiveEndMessage, LiveMessage, LiveStartMessage

MiB = 1 << 20


def test_steady_growth_projects_the_step_it_fills():
    # GIVEN end-of-step bytes rising 2 MiB a step from 100 MiB, with a capacity of 180 MiB
    points = [(step, 100 * MiB + 2 * MiB * (step - 12)) for step in range(12, 17)]
    # THEN at step 16 (108 MiB) 72 MiB are left: 36 steps at 2 MiB, full at step 52
    text = live.growth_warning("cuda:0", points, 180 * MiB)
    assert text == "at +2.00 MiB per step, cuda:0 is full in about 36 steps (step 52)"


def test_no_growth_warning_for_few_ends_a_poor_fit_a_fall_or_no_capacity():
    rising = [(s, s * MiB) for s in range(1, 6)]
    assert live.growth_warning("host", rising[:4], 1 << 30) is None  # fewer than 5 ends
    assert live.growth_warning("host", rising, None) is None
    drift = [(s, 100 * MiB + s * 4096) for s in range(1, 6)]  # 4 KiB a step: no leak
    assert live.growth_warning("host", drift, 101 * MiB) is None
    falling = [(s, (10 - s) * MiB) for s in range(1, 6)]
    assert live.growth_warning("host", falling, 1 << 30) is None
    noisy = [(1, 10 * MiB), (2, 2 * MiB), (3, 12 * MiB), (4, 1 * MiB), (5, 13 * MiB)]
    slope, fit = live.growth(noisy)
    assert slope > 0 and fit < live.MIN_FIT and live.growth_warning("host", noisy, 1 << 30) is None


def test_the_peak_near_the_capacity_is_said():
    assert live.near_warning("GPU:0", 80 * MiB, 100 * MiB) is None
    text = live.near_warning("GPU:0", 95 * MiB, 100 * MiB)
    assert text == "the peak is within 10 % of GPU:0's capacity (95.0 MiB, 95 % of 100.0 MiB)"


def _sample(t: float, value: int) -> dict:
    return {
        "t": t,
        "clock": t,
        "devices": [live._device("host", value, None, value, None)],
        "step": 0,
        "step_peak_bytes": {},
        "step_end_bytes": {},
        "detail": False,
        "heap_bytes": None,
    }


def test_decimation_keeps_at_most_1000_samples_and_every_peak():
    # GIVEN 5,000 samples of a feed, with a spike between two samples at 4,321
    feed = live.LiveFeed("f")
    samples = [_sample(i * 0.05, i) for i in range(5000)]
    samples[4321]["devices"][0]["max_in_use_bytes"] = 10**9
    for i in range(0, 5000, 7):  # in batches, as the sender takes them
        feed._keep(samples[i : i + 7])
    assert len(feed.samples) <= live.MAX_SAMPLES
    peaks = [s["devices"][0]["max_in_use_bytes"] for s in feed.samples]
    assert max(peaks) == 10**9 and feed.samples[0]["t"] == 0.0 and feed.samples[-1]["t"] == samples[-1]["t"]
    times = [s["t"] for s in feed.samples]
    assert times == sorted(times)


def test_a_stated_capacity_applies_to_the_framework_device_else_the_host():
    feed = live.LiveFeed("f", capacity_bytes=123)
    feed._keep([_sample(0, 1)])
    assert feed.capacity("host") == 123
    gpu = _sample(0.05, 1)
    gpu["devices"].append(live._device("cuda:0", 5, 8, 5, 1000))
    feed._keep([gpu])
    assert feed.capacity("cuda:0") == 123 and feed.capacity("host") is None


def test_messages_reach_the_sinks_in_order_and_decode_as_the_wire_says():
    got: list[dict] = []
    remove = live.add_sink(lambda m: got.append(json.loads(json.dumps(m))))
    try:
        feed = live.start_run("cell", budget_bytes=1 << 30, capacity_bytes=None)
        for i in range(3):
            feed.sample(i * 0.05, (i + 1) * MiB, (i + 2) * MiB, 7)
        live.end_run(feed, "abc")
    finally:
        remove()
    assert [m["type"] for m in got][0] == "live_start" and got[-1]["type"] == "live_end"
    assert decode(LiveStartMessage, got[0], "start").name == "cell"
    messages = [decode(LiveMessage, m, "live") for m in got[1:-1]]
    samples = [s for m in messages for s in m.samples]
    assert [s.devices[0].max_in_use_bytes for s in samples] == [2 * MiB, 3 * MiB, 4 * MiB]
    assert samples[0].heap_bytes == 7 and decode(LiveEndMessage, got[-1], "end").profile_id == "abc"
    assert live.current() is None


def test_without_a_sink_nothing_is_sent_nor_a_thread_started():
    assert not live.listening()
    feed = live.start_run("quiet")
    time.sleep(0.01)
    live.end_run(feed, None)
    assert feed._sender is None and feed.samples == []


@pytest.mark.slow
def test_the_profile_is_the_same_with_the_feed_on_and_off():
    """A deterministic CPU loop (torch, fixed seed): the same steps and the same peaks."""
    torch = pytest.importorskip("torch")
    import memprofile

    def run() -> memprofile.Profile:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with memprofile.profile("feed", store=False, whatif=False) as p:
            for _ in range(30):
                model(torch.randn(256, 128)).square().mean().backward()
                opt.step()
                opt.zero_grad()
                time.sleep(0.01)  # a few live samples land within the run
        return p

    off = run()
    sent: list[dict] = []
    remove = live.add_sink(sent.append)
    try:
        on = run()
    finally:
        remove()
    assert any(m["type"] == "live" for m in sent)
    assert len(on.steps) == len(off.steps) == 30
    assert [s.peak_bytes for s in on.steps] == [s.peak_bytes for s in off.steps]
    assert [s.end_bytes for s in on.steps] == [s.end_bytes for s in off.steps]
    framework = {d.name: d.peak_bytes for d in on.devices if d.kind == "allocator"}
    assert framework == {d.name: d.peak_bytes for d in off.devices if d.kind == "allocator"} and framework


def test_the_step_and_the_detail_come_from_the_running_clocks():
    from memprofile.capture.base import DetailWindow
    from memprofile.capture.steps import StepClock, register_clock, unregister_clock

    clock = StepClock(DetailWindow.of(3))
    register_clock(clock)
    try:
        assert live._steps() == (0, {}, {}, True)  # step 1 is in the window: the detail records
        for _ in range(3):
            clock.end_step(detailed=True).ends["cuda:0"] = 5
        step, peaks, ends, detail = live._steps()
        assert (step, ends, detail) == (3, {"cuda:0": 5}, False)
    finally:
        unregister_clock(clock)
    assert live._steps() == (0, {}, {}, False)


def test_the_magic_takes_a_capacity_as_it_takes_sizes_and_refuses_a_bad_one(ip, fresh_store, capsys):
    result = ip.run_cell("%%memprofile -q --capacity lots\nx = 1")
    assert not result.success and len(fresh_store) == 0
    assert "--capacity takes a size such as 16G or 512M, got 'lots'" in "".join(capsys.readouterr())
    got: list[dict] = []
    remove = live.add_sink(got.append)
    try:
        assert ip.run_cell("%%memprofile -q --capacity 1.5G\nx = 1").success
    finally:
        remove()
    assert got[0]["type"] == "live_start" and got[0]["capacity_bytes"] == 3 << 29
    assert got[-1] == {"run": got[0]["run"], "profile_id": fresh_store.last().id, "type": "live_end"}
