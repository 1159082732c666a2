"""CUDA's caching allocator, in the terms the profile uses: the facts the
suggestions need from `torch.cuda.memory_stats()`, the largest live blocks of
a memory snapshot, and the size an out-of-memory error asked for.

Plain code over the documented dicts and messages, no torch needed: written
against PyTorch's documented key names and never run on a GPU here (the
tests feed dicts shaped like the documented ones and recorded GPU traces).
"""

from __future__ import annotations

import re
from typing import Any

_CPU_OOM = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)
_CUDA_OOM = re.compile(r"Tried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB)")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def requested_bytes(message: str) -> int | None:
    """The size an out-of-memory error says was asked for (CPU or CUDA wording)."""
    m = _CPU_OOM.search(message)
    if m:
        return int(m.group(1))
    m = _CUDA_OOM.search(message)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(2)])
    return None


def cuda_facts(stats: dict[str, Any], capacity_bytes: int | None = None) -> dict[str, int]:
    """The figures the suggestions need from `torch.cuda.memory_stats()`.

    Written against the documented key names (no GPU has run this; tests use
    dicts shaped like the documented ones).
    """

    def get(key: str) -> int:
        value = stats.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    facts = {
        "allocated_bytes": get("allocated_bytes.all.current"),
        "allocated_peak_bytes": get("allocated_bytes.all.peak"),
        "reserved_bytes": get("reserved_bytes.all.current"),
        "reserved_peak_bytes": get("reserved_bytes.all.peak"),
        "inactive_split_bytes": get("inactive_split_bytes.all.current"),
        "alloc_retries": get("num_alloc_retries"),
        "ooms": get("num_ooms"),
    }
    reserved = facts["reserved_bytes"]
    # Share of reserved memory that is not handed out: what a large request
    # may fail to use when it is split into pieces.
    facts["fragmentation_permille"] = round(1000 * (reserved - facts["allocated_bytes"]) / reserved) if reserved else 0
    if capacity_bytes:
        facts["capacity_bytes"] = capacity_bytes
    return facts


def live_blocks_from_snapshot(snapshot: dict[str, Any], top: int = 20) -> list[dict[str, Any]]:
    """The largest live blocks of a `torch.cuda.memory._snapshot()` with the
    innermost frames of the stack that allocated each (documented format:
    segments -> blocks with size, state and frames)."""
    blocks: list[dict[str, Any]] = []
    for segment in snapshot.get("segments", []):
        device = segment.get("device", 0)
        for block in segment.get("blocks", []):
            if block.get("state") != "active_allocated":
                continue
            frames = block.get("frames") or []
            where = [f"{f.get('filename', '?')}:{f.get('line', '?')} {f.get('name', '?')}" for f in frames[:4]]
            blocks.append({"device": f"cuda:{device}", "bytes": int(block.get("size", 0)), "stack": where})
    blocks.sort(key=lambda b: b["bytes"], reverse=True)
    return blocks[:top]
