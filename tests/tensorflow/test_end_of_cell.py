"""One moment per number on TF: a Keras fit past its detailed steps ends
where the cell ends (TF's own counter then), not where the detail ended,
and where the headline (the counter's peak over the whole run) is another
moment than the breakdown (the detailed steps' peak), the profile says so.
Real Keras in a process of its own with TF's BFC CPU allocator (the one
whose counters get_memory_info reads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

SCRIPT = textwrap.dedent("""
    import json
    import memprofile
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    ip.run_cell('''
    import numpy as np, tensorflow as tf, keras, memprofile
    keras.utils.set_random_seed(0)
    xs = np.random.default_rng(0).random((8192, 256), dtype="float32")  # 8 MiB, cached 4 times wider: 32 MiB
    ys = xs[:, :4].copy()
    model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)])
    model.compile("adam", "mse")
    model.fit(np.tile(xs[:64], (1, 4)), ys[:64], batch_size=32, epochs=1, verbose=0)
    data = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(64).map(lambda x, y: (tf.tile(x, [1, 4]) * 2, y)).cache()
    ''')
    cell = "%%memprofile -q -n cached\\nmodel.fit(data, epochs=2, verbose=0)\\n"
    result = ip.run_cell(cell)
    assert result.error_in_exec is None, result.error_in_exec
    current = int(ip.ev("tf.config.experimental.get_memory_info('CPU:0')['current']"))
    p = memprofile.last()
    d = p.device("tf:CPU:0")
    print(json.dumps({"current": current, "end": d.end_bytes, "at_detail": d.allocator_stats.get("end_at_detail_bytes"),
                      "steps": len(p.steps), "detailed": sum(s.detailed for s in p.steps), "scope": p.peak_scope,
                      "peak": d.peak_bytes, "breakdown": p.peak.bytes if p.peak else None}))
""")


def test_a_fit_past_its_detail_ends_at_the_cells_end_and_labels_its_breakdown():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CPU_ALLOCATOR_USE_BFC": "true"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    # GIVEN 256 steps, 3 in detail. (The cache is 4 times the data: the iterator's copy of the
    # data set's tensors, made in the first step, peaked as high as a cache of the data's size,
    # and a CI run's detail had the run's peak; small batches, since tf.data runs ahead of the
    # steps: with 16 an epoch, slow detailed steps let it fill much of the cache in the detail.)
    assert r["steps"] == 256 and r["detailed"] == 3, r
    # THEN the end is TF's counter when the cell ended (the cache holds the 32 MiB of data), not the detail's end
    assert r["end"] == pytest.approx(r["current"], abs=2**20), r
    assert r["at_detail"] is not None and r["end"] > r["at_detail"] + 16 * 2**20, r
    # AND the headline is TF's counter over the run (the cache filled in epoch 1, after the detail), above the
    # detailed steps' peak, and the breakdown's moment is named next to it
    assert r["peak"] > r["breakdown"] + 2**20, r
    # (a step after the detail that went higher is named; a peak between steps is said as such)
    said = ("a later step went higher: step ", "the breakdown is of the highest moment the detail recorded")
    assert r["scope"] and any(words in r["scope"] for words in said), r


EAGER = textwrap.dedent("""
    import json
    import tensorflow as tf
    import memprofile
    def many(n):
        for _ in range(n):
            a = tf.ones((4,)) + 1
    many(10)
    with memprofile.profile(name="eager", budget_bytes=256 * 2**20):
        many(60_000)
        kept = tf.ones((16 * 2**20,))  # 64 MiB made after the detail ended
    p = memprofile.last()
    d = p.device("tf:CPU:0")
    current = int(tf.config.experimental.get_memory_info("CPU:0")["current"])
    print(json.dumps({"why": p.capture.get("tf_detail_why"), "end": d.end_bytes, "current": current,
                      "at_detail": d.allocator_stats.get("end_at_detail_bytes")}))
""")


def test_an_eager_loop_without_steps_whose_detail_the_budget_ended_ends_at_the_cells_end():
    done = subprocess.run(
        [sys.executable, "-c", EAGER],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CPU_ALLOCATOR_USE_BFC": "true"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["why"] == "budget", r
    assert r["end"] == pytest.approx(r["current"], abs=2**20) and r["end"] > r["at_detail"] + 60 * 2**20, r
