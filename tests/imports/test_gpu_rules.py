"""The GPU-only suggestion rules (fragmentation, headroom, batch size, memory
growth) on profiles imported from real GPU traces (tests/fixtures/gpu/):
each fires or stays quiet as the trace's own numbers say.

What each rule should conclude is worked out here from the trace file itself
(kineto `[memory]` events and `deviceProperties`; the XSpace's allocator
events and device planes), not from memprofile's reading of it.
"""

from __future__ import annotations

import gzip
import json
import math
from functools import cache
from pathlib import Path

import pytest

import memprofile
from memprofile.analysis.rules import batch_size, fragmentation, headroom, suggest
from memprofile.model.profile import PHASES
from memprofile.units import fmt_bytes
from tests.imports import H100, V100_DDP, V100_LEGACY, XSPACE
from tests.imports.test_tf_trace import allocator_figures, device_name, gpu_memory_size

TORCH_TRACES = {"h100": H100, "v100_ddp": V100_DDP, "v100_legacy": V100_LEGACY}


CUDA = 1  # kineto's `Device Type` of CUDA memory events


@cache
def imported(path: Path):
    return memprofile.import_trace(path)


def ids(profile) -> dict[str, object]:
    assert not [w for w in profile.warnings if w.code == "rule_failed"], profile.warnings
    return {s.id: s for s in profile.suggestions}


@cache
def kineto_cuda(path: Path) -> dict[int, dict[str, int | None]]:
    """Per CUDA device id, from the trace's own `[memory]` events: the highest
    `Total Allocated` and `Total Reserved` (None where the format has none),
    the highest running sum of `Bytes`, and `totalGlobalMem` from deviceProperties."""
    doc = json.loads(gzip.decompress(path.read_bytes()))
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    capacity = {p.get("id"): p.get("totalGlobalMem") for p in doc.get("deviceProperties", [])}
    out: dict[int, dict[str, int | None]] = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("name") != "[memory]" or args.get("Device Type") != CUDA:
            continue
        dev = args["Device Id"]
        f = out.setdefault(
            dev, {"allocated": None, "reserved": None, "running": 0, "running_peak": 0, "capacity": capacity.get(dev)}
        )
        for key, arg in (("allocated", "Total Allocated"), ("reserved", "Total Reserved")):
            if arg in args:
                f[key] = max(f[key] or 0, args[arg])
        f["running"] += args["Bytes"]
        f["running_peak"] = max(f["running_peak"], f["running"])
    return out


# -- fragmentation: reserved vs allocated of CUDA's caching allocator ----------------------------------------------


def expected_fragmentation(path: Path) -> tuple[int, dict] | None:
    """(device id, figures) of the device the rule should name, or None: waste = reserved peak - allocated peak,
    at least 256 MiB and a fifth of what was reserved."""
    worst = None
    for dev, f in kineto_cuda(path).items():
        if f["reserved"] is None:
            continue  # the legacy format states no reserved bytes
        waste = f["reserved"] - f["allocated"]
        if waste >= fragmentation.MIN_WASTE and waste >= fragmentation.MIN_SHARE * f["reserved"]:
            if worst is None or waste > worst[1]["reserved"] - worst[1]["allocated"]:
                worst = (dev, f)
    return worst


@pytest.mark.parametrize("trace", list(TORCH_TRACES))
def test_fragmentation_as_reserved_vs_allocated_says(trace):
    path = TORCH_TRACES[trace]
    profile = imported(path)
    found = ids(profile).get("fragmentation")
    expected = expected_fragmentation(path)
    for dev, f in kineto_cuda(path).items():  # the rule's inputs are the trace's figures
        stats = profile.device(f"cuda:{dev}").allocator_stats
        if f["reserved"] is not None:
            assert stats["reserved_peak_bytes"] == f["reserved"]
            assert stats["allocated_peak_bytes"] == f["allocated"]
    if expected is None:
        assert found is None, found.evidence
        return
    dev, f = expected
    waste = f["reserved"] - f["allocated"]
    assert found is not None
    assert found.evidence.startswith(f"cuda:{dev}:")
    assert fmt_bytes(f["reserved"]) in found.evidence and fmt_bytes(f["allocated"]) in found.evidence
    assert found.estimated_saving_bytes == waste


def test_fragmentation_fires_on_the_ddp_rank_and_not_on_the_h100():
    """The two traces that state reserved bytes sit on either side of the rule's bar."""
    assert expected_fragmentation(V100_DDP) is not None
    assert expected_fragmentation(H100) is None


def test_fragmentation_is_quiet_on_tensorflow():
    """TF's BFC allocator events carry no reserved-vs-allocated pair for the rule; its devices are tf:GPU:n."""
    assert "fragmentation" not in ids(imported(XSPACE))


# -- headroom: the peak against the recorded device's capacity -------------------------------------------------------


def tf_gpu_peaks() -> dict[str, tuple[int, int]]:
    """tf:GPU:n -> (highest bytes_allocated of GPU_n_bfc, the device plane's memory_size)."""
    sizes = gpu_memory_size()
    return {
        device_name(a): (f["bytes_allocated"], sizes[device_name(a).removeprefix("tf:")])
        for a, f in allocator_figures().items()
        if a.startswith("GPU_")
    }


def expected_tight(peaks: dict[str, tuple[int, int]]) -> str | None:
    tight = {name: peak / cap for name, (peak, cap) in peaks.items() if cap and peak >= headroom.LIMIT * cap}
    return max(tight, key=tight.get) if tight else None


def check_headroom(profile, peaks: dict[str, tuple[int, int]]) -> None:
    for name, (peak, cap) in peaks.items():  # the rule sees the trace's own peak and capacity
        d = profile.device(name)
        assert (d.peak_bytes, d.capacity_bytes) == (peak, cap), name
    found = ids(profile).get("headroom")
    tight = expected_tight(peaks)
    if tight is None:
        assert found is None, found.evidence
    else:
        peak, cap = peaks[tight]
        assert found is not None and found.evidence.startswith(
            f"{tight} peaked at {fmt_bytes(peak)} of {fmt_bytes(cap)}"
        )


def test_headroom_on_the_tensorflow_gpus():
    check_headroom(imported(XSPACE), tf_gpu_peaks())


@pytest.mark.parametrize("trace", list(TORCH_TRACES))
def test_headroom_on_the_torch_gpus(trace):
    path = TORCH_TRACES[trace]
    # The legacy format states no totals: its peak is the highest running sum of the events' bytes.
    peaks = {
        f"cuda:{dev}": (f["allocated"] or f["running_peak"], f["capacity"]) for dev, f in kineto_cuda(path).items()
    }
    assert all(cap for _, cap in peaks.values())  # deviceProperties states every device's memory
    check_headroom(imported(path), peaks)


# -- batch size: from how the peak scales with the batch, against the capacity ---------------------------------------


def expected_batch_size(profile) -> str | None:
    """The title the rule should give, from the profile's peak device: trained (a backward phase), a batch
    (leading dimension of the inputs at the peak), the capacity, and the bytes that scale with the batch."""
    device = profile.peak_device
    timeline = profile.timeline(device.name)
    trained = PHASES.index("backward") in set(timeline.phase or [])
    dims = [s[0] for s in profile.peak.input_shapes if s and s[0] > 1]
    batch = max(set(dims), key=dims.count) if dims else None
    per_batch = sum(profile.peak.by_category.get(c, 0) for c in batch_size.SCALES)
    if not (trained and batch and device.capacity_bytes and per_batch):
        return None
    fixed = device.peak_bytes - per_batch
    fits = math.floor((batch_size.TARGET * device.capacity_bytes - fixed) / (per_batch / batch))
    used = device.peak_bytes / device.capacity_bytes
    if used >= batch_size.NEAR_LIMIT and 1 <= fits < batch:
        return f"Use batch {math.ceil(batch / math.ceil(batch / fits))} with {math.ceil(batch / fits)}-step"
    if used < batch_size.NEAR_LIMIT and fits >= 2 * batch:
        return f"A batch of up to {fits} fits this device"
    return None


@pytest.mark.parametrize("trace", ["tensorflow", *TORCH_TRACES])
def test_batch_size_as_the_peak_and_capacity_say(trace):
    path = XSPACE if trace == "tensorflow" else TORCH_TRACES[trace]
    profile = imported(path)
    assert profile.peak_device.name.startswith(("tf:GPU", "cuda"))
    found = ids(profile).get("batch_size")
    title = expected_batch_size(profile)
    if title is None:
        assert found is None, found.evidence
    else:
        assert found is not None and found.title.startswith(title)
        assert fmt_bytes(profile.peak_bytes) in found.evidence


def test_batch_size_needs_a_batch_an_xspace_does_not_give():
    """The XSpace trace trained (backward ops) on a device of known size, but a saved XSpace has no model
    calls and no input block is live at its peak: there is no batch to scale, so the rule stays quiet."""
    profile = imported(XSPACE)
    device = profile.peak_device
    assert device.capacity_bytes == gpu_memory_size()[device.name.removeprefix("tf:")]
    assert PHASES.index("backward") in set(profile.timeline(device.name).phase)
    assert profile.peak.input_shapes == []
    assert "batch_size" not in ids(profile)


# -- TensorFlow memory growth -------------------------------------------------------------------------------------


def test_memory_growth_is_quiet_when_the_trace_does_not_say():
    """An XSpace does not record whether memory growth was on: no advice on a guess."""
    profile = imported(XSPACE)
    assert "tf.memory_growth" not in profile.capture
    assert "tf_memory_growth" not in ids(profile)
    assert any("memory-growth" in w.message for w in profile.warnings if w.code == "import_lacks")


def test_memory_growth_with_the_setting_a_live_run_records():
    """The same real devices with the fact the live collector adds on such a machine (gpu_facts: growth off):
    the advice names each GPU's recorded peak and capacity, and saves what the peaks leave unused."""
    profile = memprofile.import_trace(XSPACE)
    peaks = tf_gpu_peaks()
    profile.capture["tf.memory_growth"] = ",".join(f"{n.removeprefix('tf:')}=off" for n in sorted(peaks))
    found = {s.id: s for s in suggest(profile)}["tf_memory_growth"]
    for name, (peak, cap) in peaks.items():
        assert f"{name} peaked at {fmt_bytes(peak)} of {fmt_bytes(cap)}" in found.evidence
    assert found.estimated_saving_bytes == sum(cap - peak for peak, cap in peaks.values())
    profile.capture["env.TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # growth forced on: nothing to say
    assert "tf_memory_growth" not in {s.id for s in suggest(profile)}


@pytest.mark.parametrize("trace", list(TORCH_TRACES))
def test_memory_growth_is_quiet_on_torch_traces(trace):
    assert "tf_memory_growth" not in ids(imported(TORCH_TRACES[trace]))
