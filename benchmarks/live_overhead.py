"""What the live feed costs a training loop (issue 30): a profiled loop with a listener (a
sink that json-serializes each message, as the comm would), against the same profiled loop
with none (the feed then builds nothing), interleaved round by round, median of the
per-round ratios (the machine is noisy and has 2 cores). Also the feed's own time: the
sampler's and the sender's CPU time building each sample and serializing it (thread_time:
the GIL they hold, not the time they wait for it), summed over the run, as a share of the
run's wall time: what the training thread can lose to it, measured without the noise of
whole-run timings. Prints markdown for docs/benchmarks.md.

    python benchmarks/live_overhead.py [--rounds 5]

Workloads (long_loops.py's): "2,000 small Adam steps" (its 64-wide MLP at batch 8, ~1 s: the
small-op loop, long enough for ~20 samples) and "transformer, 4 steps" (issue 13's 2-layer
TransformerEncoder, ~0.45 s a step on this CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from long_loops import small_steps, transformer_steps

from interleave import _settle
from memprofile.capture import live
from memprofile.profiler import Profiler


class Timed:
    """A json sink, and the time the feed spends: building samples (sampler) and sending (sender)."""

    def __init__(self) -> None:
        self.sampling = 0.0
        self.sending = 0.0
        self.samples = 0
        self.messages = 0
        self._sample = live.LiveFeed.sample

        def sample(feed, *args):
            t = time.thread_time()  # CPU time: the GIL the feed holds, not the GIL it waits for
            self._sample(feed, *args)
            self.sampling += time.thread_time() - t
            self.samples += 1

        live.LiveFeed.sample = sample  # type: ignore[method-assign]

    def sink(self, message: dict) -> None:
        t = time.thread_time()
        json.dumps(message)
        self.sending += time.thread_time() - t
        self.messages += 1


def profiled(run, ns) -> float:
    t = time.perf_counter()
    with Profiler(name="b", store=False, namespace=ns, whatif=False) as p:
        run()
    assert p.peak_bytes
    return time.perf_counter() - t


def measure(workload, steps: int, rounds: int, timed: Timed) -> dict[str, float]:
    run, ns = workload()
    profiled(run, ns)  # warm: the first start in a process is not timed
    quiet, listened, bare = [], [], []
    feed_time, wall = 0.0, 0.0
    for _ in range(rounds):
        _settle()
        t = time.perf_counter()
        run()
        bare.append(time.perf_counter() - t)
        _settle()
        quiet.append(profiled(run, ns))
        _settle()
        before = timed.sampling + timed.sending
        remove = live.add_sink(timed.sink)
        try:
            listened.append(profiled(run, ns))
        finally:
            remove()
        feed_time += timed.sampling + timed.sending - before
        wall += listened[-1]
    return {
        "bare_ms_per_step": 1000 * statistics.median(bare) / steps,
        "quiet": statistics.median(q / b for q, b in zip(quiet, bare)),
        "listened": statistics.median(x / b for x, b in zip(listened, bare)),
        "listened_vs_quiet": statistics.median(x / q for x, q in zip(listened, quiet)),
        "feed_share": feed_time / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    timed = Timed()
    print(
        "| workload | bare, per step | memprofile, no listener | memprofile + json listener "
        "| listener / no listener (median of rounds) | feed's own time / run |"
    )
    print("|---|---|---|---|---|---|")
    for label, workload, steps in (
        ("2,000 small Adam steps", lambda: small_steps(2000), 2000),
        ("transformer, 4 steps", lambda: transformer_steps(4), 4),
    ):
        r = measure(workload, steps, args.rounds, timed)
        print(
            f"| {label} | {r['bare_ms_per_step']:.3g} ms | {r['quiet']:.3f}x | {r['listened']:.3f}x "
            f"| {r['listened_vs_quiet']:.3f}x | {100 * r['feed_share']:.3f} % |"
        )
    print(
        f"\n{timed.samples} samples, {timed.messages} messages; per sample "
        f"{1e6 * timed.sampling / max(1, timed.samples):.0f} µs to build, per message "
        f"{1e6 * timed.sending / max(1, timed.messages):.0f} µs to serialize (CPU time)"
    )


if __name__ == "__main__":
    main()
