"""A whole dataset held in memory as one array/tensor, sliced into batches:
the model's inputs at the peak are [batch, *rest] and the namespace keeps an
[N, *rest] object with N many times the batch. Reading batches from disk
(memory-mapped files, a lazy Dataset, tf.data from files) keeps a few batches.

PyTorch: the estimate is the dataset's bytes less two batches of it.

Keras: `fit(array, labels)` copies the whole array into TF's memory (one
tensor, rounded up by the allocator: 187.5 MiB of rows took a 240 MiB block),
and a memory map alone changes nothing: the same fit copies the mapped file
(measured +4 MB). The code therefore fits from a `tf.data.Dataset.
from_generator` that reads batches from the map, and the estimate is what
TF holds of the copies at the peak (blocks at least the dataset's size) less
the batches the stream keeps (the one in use and the one prefetched).
Measured with TF's own counter: 257.5 MiB saved where the copies were 240 MiB.
Where the cell's fit call cannot be rewritten (no array as its first
argument, validation_split), or TF holds no copy, the rule stays quiet.

tf.data: a `.cache()` in the cell holds every element in memory once the
first epoch read it (the capture names those blocks "tf.data cache (line N:
...)"). The code caches to a file in a new folder instead (the same elements,
written once and read back each epoch); the estimate is the cache's bytes at
the peak less one batch (the largest other input block at the peak; read back from the file, a
batch's elements are new blocks until the batch is copied out of them; a
shuffle after the cache would hold its buffer of them too: not counted).
Measured (tests/tensorflow/test_stream_cache.py): estimate 64.0 MiB, saved
64.4 MiB on the pipeline it was written on (96 MiB cache, batch 2048), and
64.0 MiB for 64.6 MiB on one it was not (32 KiB elements, batch 1024, prefetch). A cache built in another cell
or a module is named but its line is not the cell's: no code then.
"""

from __future__ import annotations

import ast
import re

from memprofile.analysis.cell import Call
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_BYTES = 64 << 20
MIN_BATCHES = 8
#: Keras's default batch size (fit without batch_size).
KERAS_BATCH = 32
#: Batches of the stream alive in TF at once: the one the step reads, the one prefetched.
STREAM_BATCHES = 2
#: A TF block holding the dataset is at least this share of its bytes.
COPY_SHARE = 0.9

CODE = """\
import numpy as np

# Once: write the data to disk. Then map it: only the batches read are paged in.
np.save("NAME.npy", NAME_ARRAY)
NAME = np.load("NAME.npy", mmap_mode="r")
# PyTorch: a Dataset whose __getitem__ reads one sample (from NAME or files), in a DataLoader;
# TensorFlow: tf.data.TFRecordDataset / tf.data.Dataset.from_generator instead of from_tensor_slices."""

KERAS_CODE = """\
import numpy as np
import tensorflow as tf

# fit(NAME, ...) copies all of NAME into one tensor; a memory map alone does not change that.
# Write NAME to disk once, map it, and fit from a stream of its batches (the same batches,
# in a shuffled order each epoch): TF then holds a couple of batches, not the whole array.
if not isinstance(NAME, np.memmap):
    np.save("NAME.npy", NAME)
    NAME = np.load("NAME.npy", mmap_mode="r")


def NAME_batches(batch=BATCH):
    for start in np.random.permutation(range(0, len(NAME), batch)):
        yield NAME[start : start + batch]LABELS_SLICE


NAME_stream = tf.data.Dataset.from_generator(
    NAME_batches,
    output_signature=SIGNATURE,
).prefetch(1)
FIT"""


def datasets(f: Facts) -> list[tuple]:
    inputs = f.peak.input_shapes if f.peak else []
    found = []
    for kept in f.profile.kept:
        if kept.bytes < MIN_BYTES or len(kept.shape) < 1:
            continue
        for shape in inputs:
            if (
                shape
                and len(shape) == len(kept.shape)
                and shape[1:] == kept.shape[1:]
                and kept.shape[0] >= MIN_BATCHES * max(shape[0], 1)
            ):
                found.append((kept, shape[0]))
                break
    return found


# -- Keras ---------------------------------------------------------------------
def _keras_fit(f: Facts, name: str) -> Call | None:
    """The cell's `model.fit(name, labels, ...)` call, when it can be rewritten to a stream."""
    for call in f.cell.calls_named("fit"):
        node = call.node
        if node is None or not node.args or ast.unparse(node.args[0]) != name or node.lineno != node.end_lineno:
            continue
        if "validation_split" in call.keywords or len(node.args) > 2:
            return None  # a split of the array, or positional batch size: not a stream's
        return call
    return None


def _keras_code(f: Facts, name: str, call: Call) -> str | None:
    node = call.node
    assert node is not None
    labels = ast.unparse(node.args[1]) if len(node.args) > 1 else None
    kw = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
    labels = labels or kw.get("y")
    if labels is not None and not labels.isidentifier():
        return None
    batch = kw.get("batch_size", str(KERAS_BATCH))
    spec = f"tf.TensorSpec((None, *{name}.shape[1:]), {name}.dtype)"
    if labels is not None:
        label_spec = f"tf.TensorSpec((None, *np.shape({labels})[1:]), np.asarray({labels}).dtype)"
        signature, sliced = f"(\n        {spec},\n        {label_spec},\n    )", f", {labels}[start : start + batch]"
    else:
        signature, sliced = spec, ""
    keywords = [k for k in node.keywords if k.arg not in ("x", "y", "batch_size", "shuffle")]
    fit = ast.Call(node.func, [ast.Name(f"{name}_stream")], keywords)
    rewritten = f.cell.with_replaced([(node, ast.unparse(fit))])
    if rewritten is None:
        return None
    template = KERAS_CODE.replace("LABELS_SLICE", sliced).replace("SIGNATURE", signature).replace("BATCH", batch)
    return template.replace("NAME", name).replace("FIT", rewritten.strip("\n"))


def _keras_copies(f: Facts, dataset_bytes: int) -> int:
    """TF's blocks at the peak that hold the whole dataset (Keras's copies of it)."""
    tensors = f.peak.tensors if f.peak else []
    return sum(t.bytes for t in tensors if (t.requested_bytes or t.bytes) >= COPY_SHARE * dataset_bytes)


def _check_keras(f: Facts, kept, batch: int) -> Suggestion | None:
    name = kept.name
    call = _keras_fit(f, name) if name.isidentifier() else None
    if call is None:
        return None
    copies = _keras_copies(f, kept.bytes)
    saving = copies - STREAM_BATCHES * kept.bytes * batch // kept.shape[0]
    code = _keras_code(f, name, call)
    if code is None or not f.worth_it(saving):
        return None
    evidence = (
        f"fit reads {name} ({kept.type} {'x'.join(map(str, kept.shape))}, {fmt_bytes(kept.bytes)}) in batches "
        f"of {batch}, and TF holds {fmt_bytes(copies)} of copies of all of it at the peak"
    )
    return Suggestion(
        id="stream_dataset",
        title=f"Stream {name} from disk into fit instead of copying it whole",
        evidence=evidence,
        code=code,
        estimated_saving_bytes=saving,
    )


# -- tf.data's in-memory cache -------------------------------------------------------
#: The owner the TF capture gives a cache's elements: "tf.data cache (line 2: `ds = ds.cache()`)".
_CACHE_OWNER = re.compile(r"^tf\.data cache \(line (\d+): `(.*)`\)$")

CACHE_CODE = """\
import os
import tempfile

# The cache on disk instead of in memory: its elements are written once, then read back
# each epoch. A new folder per run: a cache file of another pipeline is never read.
cache_dir = tempfile.mkdtemp(prefix="tfdata-cache-")
"""


def _cache_call(line: str) -> ast.Call | None:
    """The `.cache()` call (no filename) on a line of the cell."""
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "cache"
            and not node.args
            and not node.keywords
        ):
            return node
    return None


def _check_tf_cache(f: Facts) -> Suggestion | None:
    """A tf.data `.cache()` of the cell holding its elements in memory at the
    peak: cache them in a file instead (the estimate: the cache's bytes at the
    peak, which the capture names by its line)."""
    caches = [(name, held) for name, held in f.peak.by_layer.items() if _CACHE_OWNER.match(name)] if f.peak else []
    if not caches:
        return None
    name, held = max(caches, key=lambda nh: nh[1])
    m = _CACHE_OWNER.match(name)
    assert m is not None
    number = int(m.group(1))
    lines = f.cell.source.splitlines()
    if not 0 < number <= len(lines) or lines[number - 1].strip() != m.group(2) or not f.worth_it(held):
        return None
    call = _cache_call(lines[number - 1])
    if call is None:
        return None
    # Read back from the file, a batch's elements are new blocks until the batch is copied out of them.
    saving = held - _batch_bytes(f, name)
    if not f.worth_it(saving):
        return None
    edited = lines[number - 1].replace(".cache()", '.cache(os.path.join(cache_dir, "elements"))', 1)
    cell = "\n".join([*lines[: number - 1], edited, *lines[number:]])
    return Suggestion(
        id="stream_dataset",
        title="Cache the tf.data pipeline on disk instead of in memory",
        evidence=(
            f"the in-memory cache of line {number} (`{m.group(2)}`) holds {fmt_bytes(held)} of "
            f"elements at the peak ({f.share(held)} of it)"
        ),
        code=CACHE_CODE + cell,
        estimated_saving_bytes=saving,
    )


def _batch_bytes(f: Facts, owner: str) -> int:
    """One batch: the largest input block at the peak that is not the cache's."""
    tensors = f.peak.tensors if f.peak else []
    return max((t.bytes for t in tensors if t.category == "input" and t.layer != owner), default=0)


def check(f: Facts) -> Suggestion | None:
    if f.framework == "tensorflow":
        cached = _check_tf_cache(f)
        if cached is not None:
            return cached
    found = datasets(f)
    if not found:
        return None
    kept, batch = max(found, key=lambda kb: kb[0].bytes)
    if f.framework == "tensorflow":
        return _check_keras(f, kept, batch)
    saving = sum(k.bytes - 2 * k.bytes * b // k.shape[0] for k, b in found)
    if not f.worth_it(saving):
        return None
    evidence = (
        f"{kept.name} ({kept.type} {'x'.join(map(str, kept.shape))}, {fmt_bytes(kept.bytes)}) holds "
        f"{kept.shape[0] // batch} batches in memory while the model reads batches of {batch}"
    )
    name = kept.name if kept.name.isidentifier() else "data"
    array = f"{name}.numpy()" if kept.type == "torch.Tensor" else name
    code = CODE.replace("NAME_ARRAY", array).replace("NAME", name)
    return Suggestion(
        id="stream_dataset",
        title=f"Stream {kept.name} from disk instead of holding it in memory",
        evidence=evidence,
        code=code,
        estimated_saving_bytes=saving,
    )
