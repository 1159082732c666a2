"""`memprofile import` of a real TensorFlow XSpace: the 8xV100 BERT SQuAD trace
(tests/fixtures/gpu/, PROVENANCE.md fixture 4), with GPU_n_bfc and
gpu_host_bfc allocator events.

Expected figures are worked out here from the file's own events, parsed with
TF's protobuf classes directly (not with memprofile's parser).
"""

from __future__ import annotations

import gzip
import random
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

import memprofile
from memprofile.capture.tensorflow import raw_from_xspace
from memprofile.cli import main
from memprofile.errors import ProfileFormatError
from memprofile.importing import read_run
from tests.imports import XSPACE, cut_short


def _stat_value(stat, names: dict[int, str]):
    kind = stat.WhichOneof("value")
    value = getattr(stat, kind) if kind else 0
    return names.get(value, "") if kind == "ref_value" else value


@cache
def xspace_bytes() -> bytes:
    return gzip.decompress(XSPACE.read_bytes())


FIGURES = ("allocations", "frees", "bytes_allocated", "peak_bytes_in_use")


@cache
def allocator_figures() -> dict[str, dict[str, int]]:
    """Per allocator, from the file's memory events: allocations, frees, the
    highest `bytes_allocated` and `peak_bytes_in_use`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes())
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIGURES, 0))
    for plane in space.planes:
        names = {k: m.name for k, m in plane.stat_metadata.items()}
        kinds = {
            k: m.name for k, m in plane.event_metadata.items() if m.name in ("MemoryAllocation", "MemoryDeallocation")
        }
        for line in plane.lines:
            for event in line.events:
                if event.metadata_id not in kinds:
                    continue
                stats = {names.get(s.metadata_id): _stat_value(s, names) for s in event.stats}
                figures = out[stats["allocator_name"]]
                figures["allocations" if kinds[event.metadata_id] == "MemoryAllocation" else "frees"] += 1
                figures["bytes_allocated"] = max(figures["bytes_allocated"], stats.get("bytes_allocated", 0))
                figures["peak_bytes_in_use"] = max(figures["peak_bytes_in_use"], stats.get("peak_bytes_in_use", 0))
    return dict(out)


@cache
def gpu_memory_size() -> dict[str, int]:
    """Device plane ("GPU:4") -> its `memory_size` stat."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes())
    sizes = {}
    for plane in space.planes:
        names = {k: m.name for k, m in plane.stat_metadata.items()}
        for s in plane.stats:
            if names.get(s.metadata_id) == "memory_size":
                sizes[plane.name.removeprefix("/device:")] = _stat_value(s, names)
    return sizes


def device_name(allocator: str) -> str:
    """What the live TF collector calls an allocator's device (GPU_4_bfc -> tf:GPU:4)."""
    if allocator.startswith("GPU_"):
        return f"tf:GPU:{allocator.split('_')[1]}"
    return "tf:gpu_host" if allocator.startswith("gpu_host") else "tf:CPU:0"


@pytest.fixture(scope="module")
def profile():
    return memprofile.import_trace(XSPACE)


def test_every_allocator_is_a_device_with_its_own_peak(profile):
    figures = allocator_figures()
    gpus = [a for a in figures if a.startswith("GPU_")]
    assert len(gpus) >= 2 and "gpu_host_bfc" in figures  # the file is the one PROVENANCE.md describes
    devices = {d.name: d for d in profile.devices}
    assert set(devices) == {device_name(a) for a in figures}
    for allocator, f in figures.items():
        d = devices[device_name(allocator)]
        assert d.kind == "allocator" and d.source == allocator
        # The replayed events reach exactly the allocator's own bytes in use.
        assert d.peak_bytes == f["bytes_allocated"], allocator
        assert d.allocator_stats["allocator_peak_in_use"] == f["peak_bytes_in_use"], allocator
    assert profile.peak_bytes == max(f["bytes_allocated"] for f in figures.values())
    assert not [w for w in profile.warnings if w.code == "rule_failed"]


def test_every_event_is_a_row_of_its_allocator():
    figures = allocator_figures()
    run = read_run(XSPACE)
    logs = {log.source: log for c in run.captures for log in c.allocations}
    assert set(logs) == set(figures)
    for allocator, f in figures.items():
        log = logs[allocator]
        made_here = [i for i in range(len(log)) if not log.pre_existing[i]]
        assert len(made_here) == f["allocations"], allocator
        freed = sum(1 for i in range(len(log)) if log.t_free[i] != float("inf"))
        assert freed == f["frees"], allocator


def test_gpu_capacity_is_the_device_planes_memory_size(profile):
    sizes = gpu_memory_size()
    gpus = [d for d in profile.devices if d.name.startswith("tf:GPU:")]
    assert gpus
    for d in gpus:
        assert d.capacity_bytes == sizes[d.name.removeprefix("tf:")]
    assert profile.device("tf:gpu_host").capacity_bytes is None


def test_the_reader_is_the_live_collectors_conversion():
    """Same bytes, same log: the import adds nothing to the live code's accounting."""
    imported = read_run(XSPACE).captures[0].allocations
    live = raw_from_xspace(xspace_bytes()).allocations
    assert [(log.device, log.size, log.t_alloc, log.t_free, log.op) for log in imported] == [
        (log.device, log.size, log.t_alloc, log.t_free, log.op) for log in live
    ]


def test_the_profile_says_what_it_was_read_from_and_what_it_lacks(profile):
    notes = {w.code: w.message for w in profile.warnings}
    imported = notes["imported"]
    for allocator in allocator_figures():
        assert allocator in imported
    assert "TensorFlow XSpace" in imported and "34.83.195.179" in imported
    lacks = [w.message for w in profile.warnings if w.code == "import_lacks"]
    assert any("Keras model" in line for line in lacks)
    assert any("version" in line for line in lacks)
    silent = sorted(set(gpu_memory_size()) - {device_name(a).removeprefix("tf:") for a in allocator_figures()})
    assert silent and any(all(gpu in line for gpu in silent) for line in lacks)
    assert profile.capture["imported_from"] == XSPACE.name


def test_cli_writes_the_html_report(tmp_path, capsys):
    out = tmp_path / "bert.html"
    assert main(["import", str(XSPACE), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    peak_device = max(allocator_figures().items(), key=lambda kv: kv[1]["bytes_allocated"])[0]
    assert device_name(peak_device) in html
    assert "tf:gpu_host" in capsys.readouterr().out


def _truncated_gz(tmp_path: Path) -> Path:
    return cut_short(XSPACE.read_bytes(), tmp_path / "cut.xplane.pb.gz")


def _truncated_plain(tmp_path: Path) -> Path:
    return cut_short(xspace_bytes(), tmp_path / "cut.xplane.pb", keep=1 / 3)


def _random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "noise.xplane.pb"
    path.write_bytes(random.Random(15).randbytes(64 << 10))
    return path


def _without_memory_events(tmp_path: Path) -> Path:
    """The real file less its host plane, where every memory event is: the GPU planes only."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes())
    kept = [p for p in space.planes if p.name.startswith("/device:")]
    del space.planes[:]
    space.planes.extend(kept)
    path = tmp_path / "gpu_planes_only.xplane.pb"
    path.write_bytes(space.SerializeToString())
    return path


BAD_INPUTS = {
    "truncated gzip": (_truncated_gz, "gzip"),
    "truncated XSpace": (_truncated_plain, "XSpace"),
    "random bytes": (_random_bytes, "XSpace"),
    "no memory events": (_without_memory_events, "no memory events"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_nothing_written(case, tmp_path, capsys):
    make, why = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(ProfileFormatError) as caught:
        memprofile.import_trace(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and why in message
    out = tmp_path / "report.html"
    assert main(["import", str(path), "-o", str(out)]) != 0
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and why in err


def test_without_tensorflow_the_error_says_so(monkeypatch, tmp_path):
    """TF's protobuf classes are the only XSpace parser: a machine without TensorFlow is told so."""
    for package in ("tensorflow.tsl.profiler.protobuf", "tsl.profiler.protobuf", "tensorflow.core.profiler.protobuf"):
        # every place a TF release keeps them (capture/tensorflow/compat.py), imported or not
        monkeypatch.setitem(sys.modules, package, None)
        monkeypatch.setitem(sys.modules, f"{package}.xplane_pb2", None)
    with pytest.raises(ProfileFormatError, match="needs TensorFlow"):
        memprofile.import_trace(XSPACE)


def test_a_device_whose_memory_counters_fail_at_the_end_is_said_unsupported():
    # GIVEN the recorded 8xV100 XSpace and a GPU whose counters were read at the start but not at the end
    from memprofile.capture.base import DETAIL_STEPS, DetailWindow, RawCapture
    from memprofile.capture.steps import StepClock
    from memprofile.capture.tensorflow import SCOPE_PREFIX
    from memprofile.capture.tensorflow.events import RunStart, convert
    from memprofile.capture.tensorflow.keras_model import KerasWorld
    from memprofile.capture.tensorflow.xspace import parse_xspace, read_xspace_file

    parsed = parse_xspace(read_xspace_file(str(XSPACE)), scope_prefix=SCOPE_PREFIX)
    memory_start = {"GPU:4": {"current": 1 << 20, "peak": 2 << 20}}
    start = RunStart(
        wall0=parsed.events.t_ns[0],
        perf_offset=0.0,
        world_start=KerasWorld(),
        memory_start=memory_start,
        memory_detail_start=dict(memory_start),
    )
    raw = RawCapture(collector="tensorflow")
    # WHEN the capture is converted (this raised TypeError on the error string)
    convert(
        parsed, KerasWorld(), {"GPU:4": "get_memory_info failed"}, raw, start, StepClock(DetailWindow.of(DETAIL_STEPS))
    )
    # THEN the device's figures say why they are missing
    assert "get_memory_info failed" in raw.facts.get("tf:GPU:4.memory_info", ""), raw.facts
