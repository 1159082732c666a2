"""What profiling a TensorFlow/Keras cell costs, against the bare cell and TF's profiler.

Interleaved rounds (bare, memprofile, tf.profiler), median of per-round ratios
to the bare run of the same round, because this machine is noisy and has 2
cores. Prints markdown for docs/benchmarks.md.

    python benchmarks/tf_overhead.py [--rounds 9] [--quick]

Workloads:
- "Keras MLP fit": `model.fit` of a 3-layer MLP (256 -> 512 -> 512 -> 10, ReLU,
  Adam, MSE) on 4096 x 256 samples, batch 128, one epoch: 32 training steps.
- "Keras MLP fit, 8 steps": the same at batch 512 (the TF guide advises
  profiling about 10 steps).
- "MNIST-sized MLP fit": 784 -> 1024 -> 1024 -> 10, batch 256, 10 steps.

Columns: bare wall time; memprofile's end-to-end ratio (start + cell + stop,
until the Profile exists); memprofile's own processing after TF handed over
its trace (parsing the XSpace, categories, layers, building the Profile), as a
share of the bare time; TF's part of stopping (collecting and writing the
XSpace), same share; `tf.profiler.experimental` started and stopped around
the cell, its trace never read; and the floor for any tool that reads TF's
memory events on this CPU: the same with TF's CPU allocator statistics on
(without them TF's default CPU allocator records no memory event, and TF's
export is cheaper).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from memprofile.capture.tensorflow.counters import CpuAllocatorStats  # noqa: E402
from memprofile.capture.tensorflow.session import ProfilerSession  # noqa: E402
from memprofile.profiler import Profiler  # noqa: E402

# The time TF spends in its own stop (export of the XSpace), per memprofile run.
_tf_stop: list[float] = []
_original_stop = ProfilerSession.stop


def _timed_stop(self, keep=True):
    t0 = time.perf_counter()
    try:
        return _original_stop(self, keep)
    finally:
        _tf_stop.append(time.perf_counter() - t0)


ProfilerSession.stop = _timed_stop


def mlp_workload(batch_size, features=256, width=512, samples=4096):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", "mse")
    x = np.random.rand(samples, features).astype("float32")
    y = np.random.rand(samples, 10).astype("float32")

    def fit():
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)

    return fit, {"model": model, "x": x, "y": y}


def run_bare(fn, ns):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, 0.0, 0.0


def run_memprofile(fn, ns):
    t0 = time.perf_counter()
    p = Profiler(name="bench", store=False, namespace=ns, torch=False, tensorflow=True)
    p.start()
    fn()
    t1 = time.perf_counter()
    p.stop()
    t2 = time.perf_counter()
    tf_part = _tf_stop[-1]
    return t2 - t0, (t2 - t1) - tf_part, tf_part


def run_tf_profiler(fn, ns):
    logdir = tempfile.mkdtemp(prefix="bench-tf-")
    t0 = time.perf_counter()
    tf.profiler.experimental.start(logdir)
    fn()
    tf.profiler.experimental.stop()
    t = time.perf_counter() - t0
    shutil.rmtree(logdir, ignore_errors=True)
    return t, 0.0, 0.0


def run_tf_profiler_with_memory_events(fn, ns):
    """The floor for reading TF's memory events on this CPU: TF's default CPU
    allocator emits them only with its statistics on (what memprofile does)."""
    stats = CpuAllocatorStats(tf)
    switched = stats.turn_on()
    try:
        return run_tf_profiler(fn, ns)
    finally:
        if switched:
            stats.turn_off()


VARIANTS = {
    "bare": run_bare,
    "memprofile": run_memprofile,
    "tf.profiler start/stop": run_tf_profiler,
    "tf.profiler + memory events": run_tf_profiler_with_memory_events,
}


def measure(name, make, rounds):
    fn, ns = make()
    for variant in VARIANTS.values():  # warm-up: tracing, first-call costs
        variant(fn, ns)
    times = {k: [] for k in VARIANTS}
    ours, theirs = [], []
    for _ in range(rounds):
        for key, variant in VARIANTS.items():
            wall, own, tf_part = variant(fn, ns)
            times[key].append(wall)
            if key == "memprofile":
                ours.append(own)
                theirs.append(tf_part)
    bare = times["bare"]
    ratio = {k: statistics.median(t / b for t, b in zip(v, bare)) for k, v in times.items()}
    own_share = statistics.median(s / b for s, b in zip(ours, bare))
    tf_share = statistics.median(s / b for s, b in zip(theirs, bare))
    return (
        f"| {name} | {statistics.median(bare) * 1000:.0f} ms | {ratio['memprofile']:.2f}x | "
        f"{own_share:.0%} | {tf_share:.0%} | {ratio['tf.profiler start/stop']:.2f}x | "
        f"{ratio['tf.profiler + memory events']:.2f}x |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"{rounds} interleaved rounds; median of per-round ratios to bare\n")
    print(
        "| workload | bare | memprofile | memprofile's processing | TF's stop | tf.profiler start/stop "
        "| tf.profiler + memory events |"
    )
    print("|---|---|---|---|---|---|---|")
    print(measure("Keras MLP fit, 32 steps", lambda: mlp_workload(128), rounds))
    print(measure("Keras MLP fit, 8 steps", lambda: mlp_workload(512), rounds))
    print(
        measure(
            "MNIST-sized MLP fit (784-1024-1024-10), 10 steps",
            lambda: mlp_workload(256, features=784, width=1024, samples=2560),
            rounds,
        )
    )


if __name__ == "__main__":
    main()
