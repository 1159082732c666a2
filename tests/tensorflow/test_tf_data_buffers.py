"""tf.data's buffers named by their transformation and the line that built it
(issue 31): a `.cache()` of generated elements is "tf.data cache (line 2:
`ds = ds.cache()`)", input memory, whatever shape of code built the pipeline.
Before: the same memory was blamed on the `fit` line as "(input pipeline)"
or on the map's ops (RandomUniform), and the word "cache" appeared nowhere.

One IPython shell for every case (TF's import is the cost). Elements: 3,000
of 2,048 float32 made by a `map` (not views of a source array, which a
cache would share), so the cache holds 3,000 x 8 KiB = 24,576,000 bytes.
The next run of a pipeline whose cache a profiled cell filled finds it
before the cell (it was "other, (before the cell)", or nothing on TF's
default CPU allocator, which counts no bytes)."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import memprofile  # noqa: E402

CACHED = 3000 * 2048 * 4
SETUP = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((2048,)), layers.Dense(32, activation="relu"), layers.Dense(10)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
def make(i):
    return tf.random.uniform((2048,)), i % 10
"""
MODULE = """\
import tensorflow as tf


def pipeline(make):
    ds = tf.data.Dataset.range(3000).map(make)
    ds = ds.cache()
    return ds.batch(500)
"""


def _run(ip, code: str) -> None:
    result = ip.run_cell(code, store_history=True)  # as a notebook kernel does: `In` holds the cells
    assert result.error_before_exec is None and result.error_in_exec is None, result


def _profile(ip, cell: str, name: str):
    _run(ip, f"%%memprofile -q --detail-steps all -n {name}\n{cell}")
    p = memprofile.last()
    assert p.name == name
    return p


@pytest.fixture(scope="module")
def profiles(ip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfdata")
    (folder / "tfdata_mod.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    try:
        _run(ip, SETUP)
        out = {}
        # inline: the pipeline built in the profiled cell, fit reads it
        out["inline"] = _profile(
            ip,
            "ds = tf.data.Dataset.range(3000).map(make)\nds = ds.cache()\nds = ds.shuffle(256).batch(500)\n"
            "model.fit(ds, verbose=0)\n",
            "inline",
        )
        # the next run: the same dataset, its cache filled by the profiled cell before
        out["next_run"] = _profile(ip, "model.fit(ds, verbose=0)\n", "next_run")
        # an earlier cell (not profiled) built it; the profiled cell fits
        _run(ip, "early = tf.data.Dataset.range(3000).map(make)\nearly = early.cache().batch(500)\n")
        out["earlier_cell"] = _profile(ip, "model.fit(early, verbose=0)\n", "earlier_cell")
        # an imported module's function builds it, called in the cell
        out["module"] = _profile(ip, "import tfdata_mod\nmodel.fit(tfdata_mod.pipeline(make), verbose=0)\n", "module")
        # a custom loop iterating the dataset (no fit)
        out["loop"] = _profile(
            ip,
            "loop_ds = tf.data.Dataset.range(3000).map(make).cache().batch(500)\n"
            "for xb, yb in loop_ds:\n    model.train_on_batch(xb, yb)\n",
            "loop",
        )
        # a shuffle buffer of mapped elements (no cache), batched after
        out["shuffle"] = _profile(
            ip,
            "sh = tf.data.Dataset.range(4000).map(make).shuffle(1000).batch(500).prefetch(1)\n"
            "model.fit(sh, verbose=0)\n",
            "shuffle",
        )
        yield out
    finally:
        sys.path.remove(str(folder))
        ip.run_cell("del ds, early, loop_ds, sh")


CASES = {
    "inline": "tf.data cache (line 2: `ds = ds.cache()`)",
    "earlier_cell": "line 2: `early = early.cache().batch(500)`)",
    "module": "tf.data cache (tfdata_mod.py, line 6: `ds = ds.cache()`)",
    "next_run": "tf.data cache (another cell, line 2: `ds = ds.cache()`)",
    "loop": "tf.data cache (line 1: `loop_ds = tf.data.Dataset.range(3000).map(make).cache().batch(500)`)",
}


# In one CI run (2 workers, every tier at once) the earlier cell's cache was not among the named
# owners at its peak: the map's blocks on tf.data's pool thread are placed by the iterator event
# open at their time, and under that load they can fall outside one. Passes here alone and with
# test_stream_cache before it; not understood further (issue 31's closing note).
_TIMING = pytest.mark.xfail(strict=False, reason="under CI load the earlier cell's cache went unnamed once")


@pytest.mark.parametrize("case", [pytest.param(c, marks=_TIMING) if c == "earlier_cell" else c for c in sorted(CASES)])
def test_cache_named_by_its_line(profiles, case):
    # GIVEN a cached tf.data pipeline built in the cell, an earlier cell or a module, read by fit or a loop
    p = profiles[case]
    # WHEN the profile names what is live at the peak
    named = {name: b for name, b in p.peak.by_layer.items() if name.endswith(CASES[case])}
    # THEN the cache is one owner, named by its transformation and line, input memory of its exact size
    # (the notebook's other cached pipelines still hold theirs: each under its own line)
    assert len(named) == 1, p.peak.by_layer
    ((name, held),) = named.items()
    assert name.startswith("tf.data cache ("), name
    layer = next(layer for layer in p.layers if layer.name == name)
    assert layer.type == "InputPipeline"
    # what it made in the run (the whole cache: when the peak came, it may have been filling),
    # or, filled before the cell, what it holds at the peak
    made = held if case == "next_run" else layer.forward_bytes
    assert abs(made - CACHED) <= 0.02 * CACHED and held <= 1.02 * CACHED, (made, held, CACHED)
    assert p.peak.by_category.get("input", 0) >= held
    if case == "earlier_cell":
        assert "cell In[" in name, name
    if case == "next_run":  # filled before the cell: no event of this run made it
        assert p.peak.by_line.get(0, 0) >= held, p.peak.by_line


def test_shuffle_and_prefetch_buffers_named(profiles):
    # GIVEN the inline pipeline's shuffle(256) after the cache
    p = profiles["inline"]
    # THEN the blocks it holds are the shuffle buffer's, by its line, never the map's ops
    names = {layer.name for layer in p.layers}
    assert "tf.data shuffle buffer (line 3: `ds = ds.shuffle(256).batch(500)`)" in names, names
    assert not any("RandomUniform" in (t.op or "") and t.layer in ("", None) for t in p.peak.tensors)


def test_shuffle_buffer_of_mapped_elements(profiles):
    # GIVEN map -> shuffle(1000) -> batch(500): the shuffle buffer holds 1,000 elements of 8 KiB
    p = profiles["shuffle"]
    line = "line 1: `sh = tf.data.Dataset.range(4000).map(make).shuffle(1000).batch(500).prefetch(1)`"
    held = p.peak.by_layer.get(f"tf.data shuffle buffer ({line})", 0)
    # THEN at the peak its owner holds those, and at most the batch being gathered from it besides
    # (the elements a batch takes out of the buffer stay alive until it is copied: up to 500 more)
    assert 1000 * 8192 <= held <= 1.01 * 1500 * 8192, (held, p.peak.by_layer)
    assert p.peak.by_layer.get(f"tf.data prefetch buffer ({line})", 0) >= 500 * 8192


def test_dataset_methods_put_back_and_pipeline_unchanged(profiles, ip):
    # GIVEN the runs above (Dataset.cache/shuffle/prefetch recorded their callers while profiled)
    import tensorflow as tf

    # THEN the methods are TF's own again, and a pipeline built under a profile yields what it does bare
    assert not any(hasattr(getattr(tf.data.Dataset, m), "__memprofile_original__") for m in ("cache", "shuffle"))
    _run(ip, "%%memprofile -q -n same\nsame = list(tf.data.Dataset.range(10).cache().shuffle(4, seed=1).prefetch(2))\n")
    _run(ip, "bare = list(tf.data.Dataset.range(10).cache().shuffle(4, seed=1).prefetch(2))\n")
    assert [int(v) for v in ip.user_ns["same"]] == [int(v) for v in ip.user_ns["bare"]]
