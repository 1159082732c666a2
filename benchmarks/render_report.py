"""Time and size of the standalone HTML report for large profiles.

    python benchmarks/render_report.py [--repeats 5]

Profiles are built without a framework:
- "1M-point timeline": a host profile whose stored timeline has 1,000,000
  points (what an imported or hand-built profile can hold);
- "1M-event capture": 500,000 allocations and their 500,000 frees of an
  allocator, with categories, ops and layers, turned into a Profile by the
  same replay/build/analysis as a real capture (its stored timeline is
  capped at 20,000 points, peak exact);
plus 600 ops and a few layers. The render is timed warm (bokeh imported),
median of the repeats; the size is the file's.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from memprofile.analysis.analyse import analyse  # noqa: E402
from memprofile.analysis.build import build_profile  # noqa: E402
from memprofile.analysis.replay import replay  # noqa: E402
from memprofile.capture.base import AllocationLog, OpRecord, RawCapture  # noqa: E402
from memprofile.render.report import render_report  # noqa: E402
from tests.builders import make_profile  # noqa: E402

KINDS = ["parameter", "gradient", "optimizer_state", "activation", "temporary", "input", "other"]


def million_event_profile():
    rng = random.Random(0)
    log = AllocationLog(device="cpu", source="c10")
    live: list[int] = []
    t = 0.0
    for i in range(500_000):
        t += 1e-5
        row = log.add(
            rng.choice((4096, 65536, 1 << 20)),
            t,
            2 * i,
            category=rng.choice(KINDS),
            layer=f"encoder.layers.{i % 12}",
            op=f"aten::op_{i % 300}",
            phase="forward",
        )
        live.append(row)
        if len(live) > 200 or rng.random() < 0.5:
            j = live.pop(rng.randrange(len(live)))
            log.t_free[j] = t + 5e-6
            log.seq_free[j] = 2 * i + 1
    for j in live:
        t += 1e-5
        log.t_free[j] = t
    raw = RawCapture(
        "synthetic",
        allocations=[log],
        ops=[OpRecord(f"aten::op_{k}", "cpu", 10, 2**20, 2**19, 2**19, 2**16) for k in range(600)],
    )
    rp = [replay(log)]
    profile = build_profile([raw], replays=rp, name="1M events", started_at="2026-11-23T00:00:00+00:00", duration_s=t)
    return analyse(profile)


def measure(name, profile, repeats):
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        html = render_report(profile)
        times.append(time.perf_counter() - t0)
        size = len(html.encode())
    return f"| {name} | {statistics.median(times):.2f} s | {min(times):.2f}–{max(times):.2f} s | {size:,} B |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    render_report(make_profile())  # warm: imports
    print("| profile | render (median) | range | file size |")
    print("|---|---|---|---|")
    print(measure("1M-point timeline", make_profile(n_points=1_000_000, peak_at=777_777), args.repeats))
    print(measure("1M-event capture", million_event_profile(), args.repeats))


if __name__ == "__main__":
    main()
