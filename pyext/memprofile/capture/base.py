"""What every collector gives: start(), stop() -> RawCapture, plain recorded data.

Capture never renders and never builds the Profile: model/build.py does that.
Collectors are looked up by name and imported lazily, so importing memprofile
imports no framework.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class RawDevice:
    """Live bytes of one memory pool as recorded (samples or allocator events)."""

    name: str
    kind: str  # "allocator" | "process"
    source: str  # what measured it: "rss", "c10", "mklcpu", ...
    t: list[float]  # seconds since the run's origin
    live_bytes: list[int]
    baseline_bytes: int
    end_bytes: int
    #: The exact peak from a counter outside the samples (the OS high-water
    #: mark), when there is one; it can exceed max(live_bytes) when the peak
    #: fell between two samples.
    counter_peak_bytes: int | None = None
    capacity_bytes: int | None = None
    recorded_points: int = 0


@dataclass
class RawCapture:
    collector: str
    devices: list[RawDevice] = field(default_factory=list)
    frameworks: dict[str, str] = field(default_factory=dict)  # name -> version
    notes: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    options: dict[str, str] = field(default_factory=dict)


class Collector(Protocol):
    name: str

    def start(self, origin: float) -> None:
        """Start recording; times are seconds since `origin` (a time.perf_counter()
        value shared by every collector of a run, so their timelines line up)."""
        ...

    def stop(self) -> RawCapture:
        """Stop recording and return what was recorded. Must leave nothing running."""
        ...


_REGISTRY = {
    "host": ("memprofile.capture.host", "HostCollector"),
}


def collector_names() -> list[str]:
    return list(_REGISTRY)


def create_collector(name: str, **options) -> Collector:
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown collector {name!r}; known: {', '.join(_REGISTRY)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)
