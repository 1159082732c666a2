"""stream_dataset for a tf.data `.cache()` (issue 31), measured: the rule's
code (the cell with `.cache()` writing to a file in a new folder) is applied
as "Try it" would, and the peak it saves is within 25 % of its estimate (the
cache's bytes the capture names by its line, less one batch). Measured: 64.0
MiB estimated, 64.4 and 64.6 MiB saved. A pipeline whose cache holds
views of a source tensor (from_tensor_slices, no map) keeps no memory of its
own: the rule stays quiet there."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from tests.fixes import harness  # noqa: E402
from tests.fixes.workloads import Workload  # noqa: E402

SETUP = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
keras.utils.set_random_seed(5)
scorer = keras.Sequential([keras.Input((4096,)), layers.Dense(16, activation="relu"), layers.Dense(4)])
scorer.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
def featurize(i):
    return tf.random.normal((4096,)), i % 4
"""
# 6,144 mapped elements of 16 KiB: a 96 MiB cache, filled in the 3 steps the detail records.
CACHED = Workload(
    name="keras_tf_data_cache",
    label="tf.data map + cache() (96 MiB of generated features), batch 2048, fit",
    setup=SETUP,
    cell=(
        "features = tf.data.Dataset.range(6144).map(featurize)\n"
        "features = features.cache()\n"
        "scorer.fit(features.batch(2048), verbose=0)\n"
    ),
)
# Not the pipeline the estimate was written on: wider elements, smaller batches, a prefetch.
WIDER = Workload(
    name="keras_tf_data_cache_wider",
    label="tf.data map + cache() (96 MiB: 3,072 elements of 32 KiB), batch 1024, prefetch 1, fit",
    setup=SETUP.replace("4096", "8192"),
    cell=(
        "wide = tf.data.Dataset.range(3072).map(featurize).cache()\n"
        "scorer.fit(wide.batch(1024).prefetch(1), verbose=0)\n"
    ),
)
VIEWS = Workload(
    name="keras_tf_data_cache_views",
    label="from_tensor_slices + cache(): the cache shares the source tensor's buffer",
    setup=SETUP + "table = np.random.rand(6144, 4096).astype('float32')\nlabels = np.arange(6144) % 4\n",
    cell=(
        "rows = tf.data.Dataset.from_tensor_slices((table, labels)).cache()\nscorer.fit(rows.batch(2048), verbose=0)\n"
    ),
)


@pytest.mark.parametrize("workload", [CACHED, WIDER], ids=lambda w: w.name)
def test_cache_on_disk_measured(ip, workload):
    # GIVEN a cell whose tf.data pipeline caches its mapped elements in memory
    # WHEN stream_dataset's code is applied and the cell profiled again
    m = harness.measure(ip, workload, "stream_dataset")
    # THEN it fired with the cell's own code, and saved what it said within 25 %
    assert m.fired and m.failed is None, m
    assert m.mode == "replaces", m
    assert m.within_bar, m.describe()
    assert m.estimate >= 48 << 20, m


def test_cache_of_views_stays_quiet(ip):
    # GIVEN a cache over from_tensor_slices (its elements are views of one tensor)
    p = harness.before(ip, VIEWS)
    # THEN the rule says nothing: the cache holds no memory of its own
    assert harness.suggestion_of(p, "stream_dataset") is None or "cache" not in (
        harness.suggestion_of(p, "stream_dataset").title.lower()
    )
