"""`memprofile import` of PyTorch kineto traces recorded on GPUs (tests/fixtures/gpu):
peaks, reserved memory, pairing, ops and the DDP rank from the files' own events,
one accounting with the live profiler, and clear failures on bad files."""

from __future__ import annotations

import functools
import gzip
import json
import math
from pathlib import Path

import pytest

import memprofile
from memprofile.capture.base import ALIVE, BEFORE_CELL
from memprofile.capture.torch.trace import read_torch_trace
from memprofile.cli import main
from memprofile.errors import ProfileFormatError
from memprofile.units import fmt_bytes
from tests.imports import H100, V100_DDP, V100_LEGACY, cut_short

DDP, LEGACY = V100_DDP, V100_LEGACY
CURRENT = [pytest.param(H100, id="h100"), pytest.param(DDP, id="v100_ddp_rank1")]


@functools.cache
def _file(path: Path) -> dict:
    with gzip.open(path, "rb") as f:
        return json.load(f)


@functools.cache
def _memory_events(path: Path, with_time: bool = False) -> dict[str, list]:
    """The file's CUDA [memory] events' args (or (ts, args)) per device ("cuda:N"), in time order."""
    events = sorted((e for e in _file(path)["traceEvents"] if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    out: dict[str, list] = {}
    for e in events:
        if e["args"]["Device Type"] == 1:
            row = (e["ts"], e["args"]) if with_time else e["args"]
            out.setdefault(f"cuda:{e['args']['Device Id']}", []).append(row)
    return out


@functools.cache
def _imported(path: Path) -> memprofile.Profile:
    return memprofile.import_trace(path)


@functools.cache
def _run(path: Path):
    return read_torch_trace(path)


# -- the current format: Total Allocated / Total Reserved per event --------------------------------


@pytest.mark.parametrize("path", CURRENT)
def test_peak_is_the_traces_max_total_allocated(path):
    # GIVEN a trace whose CUDA events carry the allocator's running totals
    events = _memory_events(path)
    assert events, "the fixture has CUDA memory events"
    # WHEN it is imported
    profile = _imported(path)
    # THEN each device's peak is the highest Total Allocated the file records, to the byte
    for device, args in events.items():
        assert profile.device(device).peak_bytes == max(a["Total Allocated"] for a in args)


def test_h100_peak_is_the_issues_figure():
    assert _imported(H100).device("cuda:0").peak_bytes == 101_305_344
    assert _imported(H100).peak_bytes == 101_305_344


@pytest.mark.parametrize("path", CURRENT)
def test_reserved_memory_is_the_traces_total_reserved(path):
    profile = _imported(path)
    for device, args in _memory_events(path).items():
        stats = profile.device(device).allocator_stats
        last = args[-1]
        # THEN the reserved peak and the end figures are the file's, and fragmentation follows from them
        assert stats["reserved_peak_bytes"] == max(a["Total Reserved"] for a in args)
        assert stats["allocated_peak_bytes"] == max(a["Total Allocated"] for a in args)
        assert stats["reserved_bytes"] == last["Total Reserved"]
        assert stats["allocated_bytes"] == last["Total Allocated"]
        unused = last["Total Reserved"] - last["Total Allocated"]
        assert stats["fragmentation_permille"] == round(1000 * unused / last["Total Reserved"])


@pytest.mark.parametrize("path", CURRENT)
def test_every_free_pairs_with_its_allocation_by_address(path):
    # GIVEN the file's allocations and frees per device, paired here by address in time order
    run = _run(path)
    logs = {log.device: log for log in run.captures[0].allocations}
    for device, events in _memory_events(path, with_time=True).items():
        live: dict[int, float] = {}  # address -> when its block was made
        lifetimes = []  # (bytes, µs from allocation to free) of every pair
        unknown = 0
        for ts, a in events:
            if a["Bytes"] > 0:
                live[a["Addr"]] = ts
            elif a["Addr"] in live:
                lifetimes.append((-a["Bytes"], ts - live.pop(a["Addr"])))
            else:
                unknown += 1
        allocations = sum(a["Bytes"] > 0 for _, a in events)
        log = logs[device]
        made = [i for i in range(len(log)) if not log.pre_existing[i]]
        # THEN one row per allocation, each freed block freed when its address was, and the unknown frees are
        # blocks from before
        assert len(made) == allocations
        paired = sorted((log.size[i], (log.t_free[i] - log.t_alloc[i]) * 1e6) for i in made if log.t_free[i] != ALIVE)
        lifetimes.sort()
        assert [size for size, _ in paired] == [size for size, _ in lifetimes]
        assert all(math.isclose(a, b, abs_tol=0.01) for (_, a), (_, b) in zip(paired, lifetimes))
        before = [i for i in range(len(log)) if log.pre_existing[i] and log.t_free[i] != ALIVE]
        assert len(before) == unknown
        assert all(log.op[i] == BEFORE_CELL for i in before)


@pytest.mark.parametrize("path", CURRENT)
def test_busiest_ops_at_the_peak_are_the_traces_ops(path):
    profile = _imported(path)
    op_names = {e["name"] for e in _file(path)["traceEvents"] if e.get("cat") == "cpu_op"}
    by_op = {op: size for op, size in profile.peak.by_op.items() if op != BEFORE_CELL}  # made before the trace: no op
    assert by_op, "the peak names the ops that allocated it"
    # THEN the busiest is one of the file's ops (the outermost around the allocation, as the live walk names
    # it: aten::linear on the H100, torch.compile's CompiledFunction on the DDP rank) ...
    assert max(by_op, key=by_op.get) in op_names
    assert all(op.name in op_names for op in profile.ops)
    # ... and the op that allocated the most itself is an aten op
    assert max(profile.ops, key=lambda op: op.self_allocated_bytes).name.startswith("aten::")


def test_capacity_comes_from_device_properties():
    props = {p["id"]: p["totalGlobalMem"] for p in _file(H100)["deviceProperties"]}
    device = _imported(H100).device("cuda:0")
    assert device.capacity_bytes == props[0]
    assert device.allocator_stats["capacity_bytes"] == props[0]


def test_h100_layers_come_from_module_scopes():
    # GIVEN a trace recorded with with_modules (nn.Module: Name_k scopes)
    profile = _imported(H100)
    scopes = {
        e["name"].removeprefix("nn.Module: ")
        for e in _file(H100)["traceEvents"]
        if e.get("cat") == "python_function" and e["name"].startswith("nn.Module: ")
    }
    layers = {layer.name: layer for layer in profile.layers}
    # THEN the layers are the scopes, nested as the scopes nest
    assert set(layers) <= scopes and "BertLayer_0" in layers
    assert layers["BertLayer_0"].type == "BertLayer"
    assert layers["BertLMHeadModel_0"].parent is None
    assert layers["BertModel_0"].parent == "BertLMHeadModel_0"
    assert profile.peak.by_layer
    assert "torch 2.6.0+cu124" in profile.capture["imported_format"]
    assert "1x NVIDIA H100 80GB HBM3" in profile.capture["imported_format"]


def test_ddp_rank_says_rank_1_of_2_on_cuda_1():
    # GIVEN rank 1's trace of a 2-GPU DDP run
    run = _run(DDP)
    facts = run.captures[0].facts
    # THEN the capture says which rank it was, and its GPU is cuda:1
    assert (facts["rank"], facts["world_size"], facts["backend"]) == ("1", "2", "nccl")
    assert "rank 1 of 2" in run.description
    devices = {log.device for log in run.captures[0].allocations}
    assert "cuda:1" in devices and "cuda:0" not in devices
    props = {p["id"]: p["totalGlobalMem"] for p in _file(DDP)["deviceProperties"]}
    assert _imported(DDP).device("cuda:1").capacity_bytes == props[1]


# -- the legacy format: Bytes only ----------------------------------------------------------------------------


def test_legacy_trace_peak_is_the_running_sum_of_bytes():
    # GIVEN the 2021 format: no Addr, no Total Allocated, no Total Reserved
    events = _memory_events(LEGACY)["cuda:0"]
    assert "Addr" not in events[0] and "Total Allocated" not in events[0]
    running, highest, lowest = 0, 0, 0
    for a in events:
        running += a["Bytes"]
        highest, lowest = max(highest, running), min(lowest, running)
    # WHEN imported
    profile = _imported(LEGACY)
    # THEN the peak is the highest running sum, over what frees of blocks from before say was held
    assert profile.device("cuda:0").peak_bytes == highest - lowest
    # and what forward made and the autograd thread freed after its nodes (no evaluate_function scopes in 2021)
    # is activations: most of a ResNet-50 training step's peak
    assert profile.peak.by_category.get("activation", 0) > profile.peak_bytes / 2
    lacks = [n.message for n in profile.warnings if n.code == "import_lacks"]
    assert any("no addresses" in line for line in lacks)
    assert any("no Total Allocated" in line for line in lacks)


def test_legacy_trace_pairs_every_free_by_size():
    events = _memory_events(LEGACY)["cuda:0"]
    log = next(log for log in _run(LEGACY).captures[0].allocations if log.device == "cuda:0")
    made = [i for i in range(len(log)) if not log.pre_existing[i]]
    assert len(made) == sum(a["Bytes"] > 0 for a in events)
    freed = sum(log.t_free[i] != ALIVE for i in range(len(log)))
    assert freed == sum(a["Bytes"] < 0 for a in events)


# -- one accounting: the live profiler and the import ------------------------------------------------------


def test_live_capture_and_import_of_the_same_events_agree(tmp_path, monkeypatch):
    """The live collector's walk and the trace reader feed the same MemoryLedger:
    the same events must give the same rows, ops and peak."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from memprofile.capture.torch import TorchCollector

    # GIVEN a live profile whose torch profiler also exports its events as a Chrome trace
    trace = tmp_path / "live.pt.trace.json"
    captured = {}
    read_events, stop = TorchCollector._read_events, TorchCollector.stop

    def exporting(self):
        if self._events is None and self._profiler is not None:
            self._profiler.export_chrome_trace(str(trace))
        read_events(self)

    def keeping(self):
        captured["raw"] = stop(self)
        return captured["raw"]

    monkeypatch.setattr(TorchCollector, "_read_events", exporting)
    monkeypatch.setattr(TorchCollector, "stop", keeping)

    def cell():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(2):
            model(torch.randn(64, 256)).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    with memprofile.profile(name="live", store=False, namespace={}) as p:
        cell()
    # WHEN the trace of the same events is imported
    imported = read_torch_trace(trace).captures[0]
    live = captured["raw"]
    live_log = next(log for log in live.allocations if log.device == "cpu")
    log = next(log for log in imported.allocations if log.device == "cpu")

    def made(log):
        rows = [i for i in range(len(log)) if not log.pre_existing[i]]
        return [
            (
                log.size[i],
                log.op[i],
                log.phase[i] if log.phase[i] in ("backward", "optimizer") else "",
                log.t_free[i] == ALIVE,
            )
            for i in rows
        ]

    # THEN the same allocations, in the same order, with the same op, phase and pairing
    assert len(made(log)) > 100
    assert made(log) == made(live_log)

    def ops(records):
        return {
            r.name: (r.calls, r.allocated_bytes, r.self_allocated_bytes, r.freed_bytes, r.max_alloc_bytes)
            for r in records
            if r.allocated_bytes or r.freed_bytes
        }

    assert ops(imported.ops) == ops(live.ops)
    # and the same peak over the start
    cpu = p.device("cpu")
    profile = memprofile.import_trace(trace)
    imported_cpu = profile.device("cpu")
    assert imported_cpu.peak_bytes - imported_cpu.baseline_bytes == cpu.peak_bytes - cpu.baseline_bytes


# -- users' paths: the CLI ---------------------------------------------------------------------------


def test_cli_writes_an_html_report_with_the_peak(tmp_path, capsys):
    out = tmp_path / "h100.html"
    assert main(["import", str(H100), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert fmt_bytes(101_305_344) in html
    assert "NVIDIA H100 80GB HBM3" in html
    assert fmt_bytes(101_305_344) in capsys.readouterr().out


def _truncated_gz(tmp_path: Path) -> Path:
    return cut_short(H100.read_bytes(), tmp_path / "cut.pt.trace.json.gz")


def _not_a_trace(tmp_path: Path) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model": "bert", "layers": [1, 2, 3]}))
    return p


def _no_memory_events(tmp_path: Path) -> Path:
    trace = dict(_file(H100))
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("name") != "[memory]"]
    p = tmp_path / "no_memory.json"
    p.write_text(json.dumps(trace))
    return p


@pytest.mark.parametrize(
    "make, why",
    [
        (_truncated_gz, "cut short"),
        (_not_a_trace, "without traceEvents"),
        (_no_memory_events, "profile_memory=True"),
    ],
)
def test_bad_files_fail_with_one_line_and_write_nothing(tmp_path, capsys, make, why):
    bad = make(tmp_path)
    with pytest.raises(ProfileFormatError, match=why):
        memprofile.import_trace(bad)
    out = tmp_path / "report.html"
    code = main(["import", str(bad), "-o", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and why in err and str(bad.name) in err
    assert not out.exists()


def test_durations_and_start_come_from_the_trace():
    run = _run(H100)
    xs = [e for e in _file(H100)["traceEvents"] if e.get("ph") in ("X", "i") and isinstance(e.get("ts"), int | float)]
    first = min(e["ts"] for e in xs)
    last = max(e["ts"] + e.get("dur", 0) for e in xs)
    assert math.isclose(run.duration_s, (last - first) / 1e6)
    assert run.started_at.startswith("2025-07-18")
