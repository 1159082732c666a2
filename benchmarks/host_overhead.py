"""Cost of the host collector (RSS sampler thread) on a cell's wall time.

Interleaved runs (bare, profiled, bare, profiled, ...), median of the
per-pair ratios, because this machine is noisy and has 2 cores. Prints a
markdown table for docs/benchmarks.md.

    python benchmarks/host_overhead.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import memprofile


def python_loop() -> None:
    """GIL-bound: the sampler competes for the interpreter."""
    total = 0
    for i in range(2_000_000):
        total += i * i


def numpy_alloc() -> None:
    """Allocation-heavy: 40 arrays of 8 MiB created and dropped."""
    for _ in range(40):
        a = np.ones(2**20)
        a += 1.0


def small_cells() -> None:
    """A very short cell: the fixed cost of starting and stopping dominates."""
    sum(range(10_000))


WORKLOADS = {"python loop (GIL-bound)": python_loop, "numpy allocations": numpy_alloc, "tiny cell": small_cells}


def _time(fn, profiled: bool) -> float:
    t0 = time.perf_counter()
    if profiled:
        with memprofile.profile(name="bench", store=False):
            fn()
    else:
        fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print("| workload | bare median | profiled median | median ratio |")
    print("|---|---|---|---|")
    for name, fn in WORKLOADS.items():
        fn()  # warm-up
        bare, prof, ratios = [], [], []
        for _ in range(args.repeats):
            b = _time(fn, False)
            p = _time(fn, True)
            bare.append(b)
            prof.append(p)
            ratios.append(p / b)
        print(
            f"| {name} | {statistics.median(bare) * 1e3:.1f} ms | {statistics.median(prof) * 1e3:.1f} ms "
            f"| {statistics.median(ratios):.3f} |"
        )


if __name__ == "__main__":
    main()
