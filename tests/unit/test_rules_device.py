"""Rules that read device facts only GPUs produce (TF memory growth, CUDA
fragmentation) and capacity headroom, on profiles built in the test from the
documented stats keys: no GPU has run this."""

from __future__ import annotations

from memprofile.analysis.rules import suggest
from memprofile.model.profile import Device, Peak, Timeline
from tests.builders import make_profile, make_rich_profile

GiB = 2**30


def _ids(profile):
    return {s.id for s in suggest(profile)}


def _tf_gpu(growth: str, env: dict | None = None):
    p = make_profile()
    p.devices.append(Device("tf:GPU:0", "allocator", "bfc", 3 * GiB, GiB, 2 * GiB, capacity_bytes=16 * GiB))
    p.timelines.append(Timeline("tf:GPU:0", [0.0, 1.0], [GiB, 3 * GiB]))
    p.capture.update({"tf.gpus": "1", "tf.memory_growth": growth, **(env or {})})
    return p


def test_tf_memory_growth_fires_when_growth_is_off_and_goes_at_the_top():
    (s,) = [s for s in suggest(_tf_gpu("GPU:0=off")) if s.id == "tf_memory_growth"]
    assert s.placement == "top" and s.restart_kernel
    assert "set_memory_growth(gpu, True)" in s.code and "TF_FORCE_GPU_ALLOW_GROWTH" in s.code
    assert "GPU:0" in s.evidence and "3.00 GiB of 16.0 GiB" in s.evidence
    assert s.estimated_saving_bytes == 13 * GiB


def test_tf_memory_growth_is_quiet_when_on_or_forced_or_without_gpus():
    assert "tf_memory_growth" not in _ids(_tf_gpu("GPU:0=on"))
    assert "tf_memory_growth" not in _ids(_tf_gpu("GPU:0=off", {"env.TF_FORCE_GPU_ALLOW_GROWTH": "true"}))
    assert "tf_memory_growth" not in _ids(make_rich_profile())


def _cuda(reserved_peak: int, allocated_peak: int, retries: int = 0, capacity: int = 80 * GiB, peak: int = 0):
    p = make_profile()
    peak = peak or allocated_peak
    p.devices.append(
        Device(
            "cuda:0",
            "allocator",
            "c10",
            peak,
            GiB,
            GiB,
            capacity_bytes=capacity,
            allocator_stats={
                "reserved_peak_bytes": reserved_peak,
                "allocated_peak_bytes": allocated_peak,
                "alloc_retries": retries,
            },
        )
    )
    p.timelines.append(Timeline("cuda:0", [0.0, 1.0], [GiB, peak]))
    p.peak = Peak("cuda:0", 1.0, peak)
    return p


def test_fragmentation_fires_on_reserved_far_above_allocated_or_retries():
    (s,) = [s for s in suggest(_cuda(30 * GiB, 20 * GiB)) if s.id == "fragmentation"]
    assert s.estimated_saving_bytes == 10 * GiB and "expandable_segments:True" in s.code and s.placement == "top"
    assert "10.0 GiB reserved but unused" in s.evidence
    (s,) = [s for s in suggest(_cuda(21 * GiB, 20 * GiB, retries=3)) if s.id == "fragmentation"]
    assert "3 allocation(s) had to free cached blocks and retry" in s.evidence


def test_fragmentation_is_quiet_on_a_healthy_allocator():
    assert "fragmentation" not in _ids(_cuda(21 * GiB, 20 * GiB))
    assert "fragmentation" not in _ids(make_rich_profile())


def test_headroom_warns_above_85_percent_of_the_device():
    (s,) = [s for s in suggest(_cuda(75 * GiB, 72 * GiB, peak=72 * GiB)) if s.id == "headroom"]
    assert "90 %" in s.evidence and "mem_get_info" in s.code and s.estimated_saving_bytes is None
    assert "headroom" not in _ids(_cuda(60 * GiB, 60 * GiB, peak=60 * GiB))


def test_rules_run_on_empty_and_host_only_profiles_without_firing():
    assert suggest(make_profile(n_points=0)) == []
    assert suggest(make_profile()) == []
