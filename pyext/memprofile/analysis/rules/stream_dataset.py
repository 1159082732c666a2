"""A whole dataset held in memory as one array/tensor, sliced into batches:
the model's inputs at the peak are [batch, *rest] and the namespace keeps an
[N, *rest] object with N many times the batch. Reading batches from disk
(memory-mapped files, a lazy Dataset, tf.data from files) keeps a few batches.
Estimate: the dataset's bytes less two batches of it."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_BYTES = 64 << 20
MIN_BATCHES = 8

CODE = """\
import numpy as np

# Once: write the data to disk. Then map it: only the batches read are paged in.
np.save("NAME.npy", NAME_ARRAY)
NAME = np.load("NAME.npy", mmap_mode="r")
# PyTorch: a Dataset whose __getitem__ reads one sample (from NAME or files), in a DataLoader;
# TensorFlow: tf.data.TFRecordDataset / tf.data.Dataset.from_generator instead of from_tensor_slices."""


def datasets(f: Facts) -> list[tuple]:
    inputs = f.peak.input_shapes if f.peak else []
    found = []
    for kept in f.profile.kept:
        if kept.bytes < MIN_BYTES or len(kept.shape) < 1:
            continue
        for shape in inputs:
            if shape and len(shape) == len(kept.shape) and shape[1:] == kept.shape[1:] \
                    and kept.shape[0] >= MIN_BATCHES * max(shape[0], 1):
                found.append((kept, shape[0]))
                break
    return found


def check(f: Facts) -> Suggestion | None:
    found = datasets(f)
    if not found:
        return None
    kept, batch = max(found, key=lambda kb: kb[0].bytes)
    saving = sum(k.bytes - 2 * k.bytes * b // k.shape[0] for k, b in found)
    if not f.worth_it(saving):
        return None
    evidence = (f"{kept.name} ({kept.type} {'x'.join(map(str, kept.shape))}, {fmt_bytes(kept.bytes)}) holds "
                f"{kept.shape[0] // batch} batches in memory while the model reads batches of {batch}")
    name = kept.name if kept.name.isidentifier() else "data"
    array = f"{name}.numpy()" if kept.type == "torch.Tensor" else name
    code = CODE.replace("NAME_ARRAY", array).replace("NAME", name)
    return Suggestion(id="stream_dataset", title=f"Stream {kept.name} from disk instead of holding it in memory",
                      evidence=evidence, code=code, estimated_saving_bytes=saving)
