"""The live torch collector's event walk (capture/torch/walk.py `walk`), CUDA branch
included, run on real GPU events: torch's event tree is rebuilt from a
recorded trace (ops nested by their intervals per thread, `[memory]` events as
leaves, `nn.Module` scopes as the collector's own layer scopes), walked by the
live code as if torch's profiler had made it, and compared with what
`memprofile import` makes of the same file. No GPU here: this is the only
way the live CUDA branch processes GPU data, and it fails if the two paths
diverge."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from memprofile.capture.torch.ledger import add_cuda_baseline  # noqa: E402
from memprofile.capture.torch.trace import read_torch_trace  # noqa: E402
from memprofile.capture.torch.walk import LAYER_PREFIX, walk  # noqa: E402
from tests.imports import FIXTURES, H100, V100_DDP  # noqa: E402

TRACES = [H100.name, V100_DDP.name]
DEVICE_TYPES = {0: "cpu", 1: "cuda"}


class Node:
    """The fields of torch's profiler event (`_ProfilerEvent`) that the walk reads."""

    def __init__(self, name: str, start_ns: int, end_ns: int, extra: object = None) -> None:
        self.name, self.start_time_ns, self.end_ns = name, start_ns, end_ns
        self.extra_fields = extra or SimpleNamespace(sequence_number=-1, inputs=[])
        self.children: list[Node] = []


def event_tree(events: list[dict]) -> list[Node]:
    """Per thread: ops and module scopes nested by their intervals, each memory
    event a leaf of the innermost one open at its time."""
    threads: dict[str, list[tuple]] = {}
    for e in events:
        name, ph = e.get("name", ""), e.get("ph")
        start = int(round(float(e.get("ts", 0)) * 1000))
        if name == "[memory]":
            a = e["args"]
            kind = DEVICE_TYPES.get(a.get("Device Type"), "other")
            device = "cpu" if kind == "cpu" else f"{kind}:{a.get('Device Id')}"
            extra = SimpleNamespace(
                alloc_size=a["Bytes"],
                device=device,
                ptr=a["Addr"],
                allocation_id=(device, a["Addr"]),
                total_allocated=a.get("Total Allocated", -1),
            )
            threads.setdefault(str(e.get("tid")), []).append((start, 1, Node(name, start, start, extra)))
        elif ph == "X" and (e.get("cat") == "cpu_op" or name.startswith("nn.Module: ")):
            end = start + int(round(float(e.get("dur", 0)) * 1000))
            label = LAYER_PREFIX + name[len("nn.Module: ") :] if name.startswith("nn.Module: ") else name
            threads.setdefault(str(e.get("tid")), []).append((start, 0, Node(label, start, end)))
    roots: list[Node] = []
    for items in threads.values():
        items.sort(key=lambda x: (x[0], x[1], -x[2].end_ns))  # a parent before the children it contains
        stack: list[Node] = []
        for start, _, node in items:
            while stack and stack[-1].end_ns < start:
                stack.pop()
            (stack[-1].children if stack else roots).append(node)
            if node.name != "[memory]":
                stack.append(node)
    return roots


def walked(roots: list[Node]):
    """The live collector's walk over `roots`, on a process that has CUDA."""
    torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True), accelerator=None)
    walked = walk(
        roots, torch, record_shapes=False, with_stack=False, wall0=min(r.start_time_ns for r in roots), offset=0.0
    )
    # what the allocator held before the first event, as the collector's _categorise adds it
    add_cuda_baseline(walked.logs, walked.side, walked.cuda_before)
    return walked.logs, walked.ops


@pytest.mark.parametrize("name", TRACES)
def test_the_live_walk_and_the_import_give_the_same_gpu_log(name):
    with gzip.open(FIXTURES / name, "rt") as f:
        events = json.load(f)["traceEvents"]
    # GIVEN the recorded GPU events as torch's event tree, walked by the live collector
    logs, ops = walked(event_tree(events))
    # AND the same file through memprofile import's reader
    imported = {log.device: log for log in read_torch_trace(FIXTURES / name).captures[0].allocations}
    gpu = sorted(d for d in logs if d.startswith("cuda"))
    assert gpu and gpu == sorted(d for d in imported if d.startswith("cuda"))
    for device in gpu:
        live, imp = logs[device], imported[device]
        made = [i for i in range(len(live)) if not live.pre_existing[i]]
        made_imp = [i for i in range(len(imp)) if not imp.pre_existing[i]]
        # THEN every block is the same block: size, op, layer, freed or not, in the same order
        assert [live.size[i] for i in made] == [imp.size[i] for i in made_imp]
        assert [live.op[i] for i in made] == [imp.op[i] for i in made_imp]
        assert [live.layer[i] for i in made] == [imp.layer[i] for i in made_imp]
        assert [live.t_free[i] == float("inf") for i in made] == [imp.t_free[i] == float("inf") for i in made_imp]
        # AND the caching allocator's baseline (its running total before the first event) is the same
        before = sum(live.size[i] for i in range(len(live)) if live.pre_existing[i])
        assert before == sum(imp.size[i] for i in range(len(imp)) if imp.pre_existing[i]) > 0
        # AND the peak is the trace's own highest Total Allocated on that device
        totals = [
            e["args"]["Total Allocated"]
            for e in events
            if e.get("name") == "[memory]"
            and e["args"].get("Device Type") == 1
            and f"cuda:{e['args']['Device Id']}" == device
        ]
        assert peak_of(live) == max(totals)


def peak_of(log) -> int:
    """The highest live bytes of a log, the blocks from before included."""
    changes = []
    for i in range(len(log)):
        changes.append((log.t_alloc[i] if not log.pre_existing[i] else float("-inf"), 0, log.size[i]))
        if log.t_free[i] != float("inf"):
            changes.append((log.t_free[i], 1, -log.size[i]))
    live = peak = 0
    for _, _, delta in sorted(changes):
        live += delta
        peak = max(peak, live)
    return peak
