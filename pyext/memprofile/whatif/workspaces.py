"""Kernels' own buffers, learned from the measured run, for a fake run to count.

A fake run sees what each op returns, not what a kernel allocates inside it. On the
CPU, oneDNN's convolution copies its input and its output into its blocked layout:
inside a 128x32x32x32 convolution the allocator holds 32 MiB more than the op's
16 MiB output (a CNN's inference-mode peak: 52.7 MiB measured, 36.6 MiB on fake
tensors), and its backward holds three grad-input-sized blocks for one. The
measured run recorded those blocks (the profiler's allocation events, inside the
op's call), so each family's in-call high-water mark, as a multiple of the call's
largest block, is learned from it and added by the fake run as a block made and
freed inside each call of that family: the same kernel at another batch, dtype or
with a change applied. It is learned per layer too (the fake run knows a call's
layer by its weight, or autocast's copy of it): a small CNN's backward holds 3.0x
its largest block in one layer and 2.0x in the next, and the family's median (2.5x)
put its fp32 peak 550 KB low and amp's saving at 0.94 of 1.44 MiB (now exact).
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Iterable

from memprofile.capture.base import ALIVE, AllocationLog

#: The op families whose kernels hold buffers of their own: the fake run's aten op name ->
#: the names the measured run's allocation events carry for it (the outermost op, or in
#: backward the autograd node).
FAMILIES = {
    "convolution": re.compile(r"aten::(_?convolution|conv\d?d|conv_transpose\d?d|mkldnn_convolution)$"),
    "convolution_backward": re.compile(r"(ConvolutionBackward\d*|aten::convolution_backward)$"),
}
#: A learned multiple above this is taken as a call the grouping got wrong.
MOST = 4.0


@functools.cache
def family_of(op: str) -> str | None:
    return next((f for f, pattern in FAMILIES.items() if pattern.search(op)), None)


def learn(logs: Iterable[AllocationLog]) -> dict[str, float]:
    """Per family: the median over the measured run's calls of the in-call high-water
    mark as a multiple of the call's largest block (1.0: the kernel holds nothing beyond
    it; the median: a call the grouping joined to a neighbour's blocks is an outlier);
    and per family and layer ("convolution_backward@encoder.2"), the same over that
    layer's calls: one layer's kernel may hold three blocks where another's holds two.
    A call is a run of consecutive allocations with one op, layer and phase."""
    seen: dict[str, list[float]] = {}
    for log in logs:
        rows = sorted((i for i in range(len(log)) if not log.pre_existing[i]), key=lambda i: log.seq_alloc[i])
        call: list[int] = []
        for i in [*rows, -1]:
            if call and (i < 0 or _key(log, i) != _key(log, call[0])):
                family = family_of(log.op[call[0]])
                if family is not None:
                    ratio = min(MOST, _high_water(log, call) / max(1, max(log.size[r] for r in call)))
                    seen.setdefault(family, []).append(ratio)
                    if log.layer[call[0]]:
                        seen.setdefault(f"{family}@{log.layer[call[0]]}", []).append(ratio)
                call = []
            if i >= 0:
                call.append(i)
    return {family: statistics.median(r) for family, r in seen.items()}


def _key(log: AllocationLog, i: int) -> tuple[str, str, str]:
    return log.op[i], log.layer[i], log.phase[i]


def _high_water(log: AllocationLog, call: list[int]) -> int:
    events = [(log.seq_alloc[r], log.size[r]) for r in call]
    events += [(log.seq_free[r], -log.size[r]) for r in call if log.seq_free[r] != ALIVE]
    live = high = 0
    for _, delta in sorted(events):
        live += delta
        high = max(high, live)
    return high


def extra_bytes(ratios: dict[str, float], family: str | None, outputs: list[int], layer: tuple[str, ...] = ()) -> int:
    """What a call of `family` (its outputs' storage sizes) holds beyond its outputs, per
    the learned multiple of its largest output: its layer's where it was learned (`layer`:
    the names the measured run may give it: `encoder.2`, or `net.encoder.2` where another
    model has an `encoder`)."""
    if family is None:
        return 0
    ratio = next((ratios[k] for k in (f"{family}@{n}" for n in layer) if k in ratios), ratios.get(family))
    if not ratio or not outputs:
        return 0
    return max(0, round(ratio * max(outputs)) - sum(outputs))
