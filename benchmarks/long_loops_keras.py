"""Keras `fit` of 200 small batches: what profiling costs end to end, against
the bare fit and the peers, and whether the profile's peak is TF's own counter.

Interleaved rounds (bare, then each tool, in the same round), median of the
per-round ratios to that round's bare fit; untimed `gc.collect()` between
tools. End to end means until the tool's result exists: memprofile's Profile
(peak known), TF's profiler trace written (`tf.profiler.experimental`, the
trace never read), memray's Tracker stopped and its file's peak read (when
memray is installed). Prints markdown for docs/benchmarks.md.

    python benchmarks/long_loops_keras.py [--rounds 7] [--allocator bfc|cpu]

Workload: a 64-wide MLP (64 -> 64 ReLU -> 64, Adam, MSE) fit on 1600 x 64
NumPy samples at batch 8, one epoch: 200 training steps of ~1.5 ms.

Allocators (chosen before TensorFlow is imported):
- bfc (default): TF_CPU_ALLOCATOR_USE_BFC=true. The allocator counts every
  block and `tf.config.experimental.get_memory_info("CPU:0")` works: every
  step's peak comes from TF's counter, and the profile's peak is checked
  against it.
- cpu: TF's default CPU allocator with oneDNN off, which sizes no block: TF
  has no counter; steps outside the detail are measured by the process's
  resident memory.

The peak check, untimed: the profile's peak against TF's counter over the
same profiled fit (a callback reads it at each batch end, before
memprofile's callback resets it, and once after the fit), and against the
counter around bare fits of the same model (median of 5; Keras's NumPy
pipeline prefetches a varying number of batches, so those vary a little).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile

from interleave import interleaved_ratios, with_memray

ALLOCATORS = {
    "bfc": {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "0"},
    "cpu": {"TF_ENABLE_ONEDNN_OPTS": "0"},
}


def fit_workload():
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(64)])
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((1600, 64), dtype="float32")

    def run(callbacks=None):
        model.fit(x, x, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)

    run()  # warm: traced, Adam's slots exist, as in any later cell
    return run, {"model": model, "x": x}


def memprofile_default(run, ns):
    from memprofile.profiler import Profiler

    with Profiler(name="b", store=False, namespace=ns, torch=False, tensorflow=True) as p:
        run()
    assert p.peak_bytes


def memprofile_all(run, ns):
    from memprofile.profiler import Profiler

    with Profiler(name="b", store=False, namespace=ns, torch=False, tensorflow=True, detail_steps=None) as p:
        run()
    assert p.peak_bytes


def tf_profiler_trace(run, ns):
    import tensorflow as tf

    logdir = tempfile.mkdtemp(prefix="bench-tf-")
    try:
        tf.profiler.experimental.start(logdir)
        run()
        tf.profiler.experimental.stop()
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def _tools():
    return with_memray(
        [
            ("memprofile (first 3 steps in detail)", memprofile_default),
            ("memprofile --detail-steps all", memprofile_all),
            ("tf.profiler trace", tf_profiler_trace),
        ]
    )


def ratios(run, ns, rounds: int) -> tuple[float, dict[str, float]]:
    return interleaved_ratios(run, ns, _tools(), rounds, warm=True)


def peak_check(run, ns) -> dict[str, object]:
    """The profile's peak against TF's counter, same fit and bare fits."""
    import keras
    import tensorflow as tf

    from memprofile.capture.tensorflow.counters import CpuAllocatorStats
    from memprofile.profiler import Profiler

    def counter_peak() -> int | None:
        try:  # TF's default CPU allocator sizes no block: 0, or no statistics at all
            return int(tf.config.experimental.get_memory_info("CPU:0")["peak"]) or None
        except ValueError:
            return None

    class Counter(keras.callbacks.Callback):
        peak = 0

        def on_train_batch_end(self, batch, logs=None):
            self.peak = max(self.peak, counter_peak() or 0)

    stats = CpuAllocatorStats(tf)
    bare_peaks = []
    for _ in range(5):
        switched = stats.turn_on()
        try:
            tf.config.experimental.reset_memory_stats("CPU:0")
            run()
            bare_peaks.append(counter_peak())
        except ValueError:
            bare_peaks.append(None)
        finally:
            if switched:
                stats.turn_off()
    counter = Counter()
    with Profiler(name="b", store=False, namespace=ns, torch=False, tensorflow=True) as p:
        run([counter])
        after = counter_peak()
    same = max(counter.peak, after) if after is not None else None
    known = [b for b in bare_peaks if b is not None]
    return {
        "peak": p.peak_bytes,
        "device": p.peak_device.name if p.peak_device else "-",
        "same_fit": same,
        "bare": int(statistics.median(known)) if known else None,
        "steps": len(p.steps),
        "detailed": sum(s.detailed for s in p.steps),
        "exact_steps": sum(s.peak_bytes is not None for s in p.steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--allocator", choices=sorted(ALLOCATORS), default="bfc")
    args = parser.parse_args()
    os.environ.update(ALLOCATORS[args.allocator])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    run, ns = fit_workload()
    base, r = ratios(run, ns, args.rounds)
    check = peak_check(run, ns)
    tools = list(r)
    print(
        f"tensorflow {tf.__version__}, allocator {args.allocator}, {args.rounds} interleaved rounds; "
        f"median of per-round ratios to bare\n"
    )
    print("| workload | bare | " + " | ".join(tools) + " |")
    print("|---|---|" + "---|" * len(tools))
    print(
        f"| Keras fit, 200 batches of 8 (64-wide MLP) | {base * 1000:.0f} ms | "
        + " | ".join(f"{r[t]:.2f}x" for t in tools)
        + " |"
    )
    same = check["same_fit"]
    verdict = (
        "no counter on this allocator"
        if same is None
        else "equal"
        if check["peak"] == same
        else f"differs by {check['peak'] - same:+,} B"
    )
    print(
        f"\nPeak ({check['device']}, {check['steps']} steps, {check['detailed']} in detail, "
        f"{check['exact_steps']} with an exact peak): profile {check['peak']:,} B; TF's counter over the "
        f"same fit: {_bytes(same)} ({verdict}); TF's counter around bare fits, median of 5: {_bytes(check['bare'])}"
    )


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,} B"


if __name__ == "__main__":
    main()
