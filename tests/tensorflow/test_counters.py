"""The user's own TF counter after a profiled cell: by default memprofile
resets TF's peak at each step (to measure each step) and the profile says
so; with --no-reset-peak it reads what it reads after the same cell bare.
Real Keras in a process of its own with TF's BFC CPU allocator (the one
whose counters get_memory_info reads), real IPython shell for the magic."""

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
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    ip.run_cell('''
    import numpy as np, tensorflow as tf, keras, memprofile
    keras.utils.set_random_seed(0)
    big_x = np.random.default_rng(0).random((20_000, 512), dtype="float32")  # 39 MiB: fit copies it first
    big_y = big_x[:, :8].copy()
    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(8)])
    model.compile("adam", "mse")
    model.fit(big_x[:64], big_y[:64], batch_size=32, epochs=1, verbose=0)
    ''')
    FIT = "model.fit(big_x, big_y, batch_size=2000, epochs=1, verbose=0)\\n"

    def peak_after(cell):
        # the user's counter already holds a 200 MiB peak from before the cell
        ip.run_cell("tf.config.experimental.reset_memory_stats('CPU:0')\\nearlier = tf.zeros((50 * 2**20,))\\n"
                    "del earlier")
        result = ip.run_cell(cell)
        assert result.error_in_exec is None, result.error_in_exec
        return int(ip.ev("tf.config.experimental.get_memory_info('CPU:0')['peak']"))

    import memprofile
    out = {"bare": peak_after(FIT)}
    out["reset"] = peak_after("%%memprofile -q -n counted\\n" + FIT)
    p = memprofile.last()
    out["notes"] = [[w.code, w.message, w.fix] for w in p.warnings]
    out["kept"] = peak_after("%%memprofile -q --no-reset-peak -n untouched\\n" + FIT)
    out["kept_notes"] = [w.code for w in memprofile.last().warnings]
    out["bare_again"] = peak_after(FIT)
    print(json.dumps(out))
""")


def test_tfs_peak_counter_after_a_profiled_fit():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CPU_ALLOCATOR_USE_BFC": "true"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    # GIVEN a counter whose peak (200 MiB, from before the cell) is above the fit's (~85 MiB)
    assert r["bare"] >= 200 * 2**20 and r["bare_again"] >= 200 * 2**20, r
    # WHEN the fit is profiled as by default THEN memprofile reset the counter (to measure each step): it reads
    # a step's peak, and the profile says so, with the way out
    note = next(n for n in r["notes"] if n[0] == "tf_peak_reset")
    assert r["reset"] < 200 * 2**20, r
    assert "get_memory_info" in note[1] and note[2] == "%%memprofile --no-reset-peak"
    # WHEN it is profiled with --no-reset-peak THEN the counter is left alone: it reads as after the bare fit
    assert r["kept"] >= 200 * 2**20, r
    assert "tf_peak_reset" not in r["kept_notes"]
