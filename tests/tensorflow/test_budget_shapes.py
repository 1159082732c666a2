"""The profiler's own memory budget on TensorFlow, whatever runs the loop:
an eager loop of tiny ops with no training step (TF's profiler keeps ~2.4 KB
per op until it stops) in a function from another cell, under `with
memprofile.profile()` and `@memprofile.profiled`; and a Keras custom
training loop (GradientTape, optimizer.apply), whose steps end the detail.
Each in a fresh process, under a 512 MiB budget: the detail ends before it,
the high-water mark over the start stays under it, the memory comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

MiB = 2**20
BUDGET = 512 * MiB
N = 120_000  # recorded whole: ~290 MB of events, ~1.1 GB to stop and read back

SHAPE = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    import memprofile
    from memprofile.capture.host import RssReader, release_free_memory
    shape, n = sys.argv[1], int(sys.argv[2])
    BUDGET = 512 * 2**20

    def many(n):
        for _ in range(n):
            a = tf.ones((4,)) + 1

    def custom_loop(steps):
        import keras
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(1)])
        opt = keras.optimizers.SGD(0.01)
        x, y = tf.ones((4, 8)), tf.ones((4, 1))
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x) - y) ** 2)
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    def run():
        if shape == "cell_function":
            from IPython.testing.globalipapp import start_ipython
            ip = start_ipython()
            ip.run_line_magic("load_ext", "memprofile")
            ip.user_ns["many"] = many
            ip.run_cell(f"%%memprofile -q --budget 512M -n fn\\nmany({n})\\n")
            return memprofile.last()
        if shape == "with_block":
            with memprofile.profile(name="block", budget_bytes=BUDGET):
                many(n)
            return memprofile.last()
        if shape == "decorated":
            step = memprofile.profiled(name="decorated", budget_bytes=BUDGET)(many)
            step(n)
            return step.profile
        if shape == "custom_loop":
            with memprofile.profile(name="loop", budget_bytes=BUDGET):
                custom_loop(n // 100)
            return memprofile.last()
        raise SystemExit(f"no shape {shape}")

    many(100)
    custom_loop(2)
    release_free_memory()
    reader = RssReader()
    before = reader.read()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    p = run()
    hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
    release_free_memory()
    after = reader.read()
    print(json.dumps({"warnings": [w.code for w in p.warnings], "why": p.capture.get("tf_detail_why"),
                      "error": repr(p.error) if p.error else None, "hwm": hwm - before, "after": after - before,
                      "steps": len(p.steps), "detailed": sum(s.detailed for s in p.steps)}))
""")


def _run_shape(shape: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", SHAPE, shape, str(N)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("shape", ["cell_function", "with_block", "decorated"])
def test_the_budget_holds_for_an_eager_loop_without_steps(shape):
    r = _run_shape(shape)
    # THEN the detail ended on the budget, and the profile says so
    assert r["error"] is None and "budget_reached" in r["warnings"] and r["why"] == "budget", r
    # AND the process's high-water mark over the start stays under the budget, and its memory comes back
    assert r["hwm"] < BUDGET, f"{r['hwm'] / MiB:.0f} MiB over the start"
    # (TF keeps ~50 MiB after the first profile that records ~30,000 ops with TF_ENABLE_ONEDNN_OPTS=0, as
    # this suite sets: its trace buffers, which the next profiles reuse: a second one kept 2.3 MiB more)
    assert r["after"] < 100 * MiB, r["after"] / MiB


def test_a_keras_custom_loop_ends_its_detail_at_its_steps():
    r = _run_shape("custom_loop")
    assert r["error"] is None and r["steps"] == N // 100 and r["detailed"] == 3, r
    assert r["hwm"] < BUDGET and r["after"] < 100 * MiB, r
