"""The headline of a framework's error message: its own words, the stack frames it carries folded.
Messages as torch and TF write them (a DataLoader worker's, CUDA's out-of-memory, TF's eager op)."""

from __future__ import annotations

from memprofile.capture.base import ModuleRecord
from memprofile.capture.failure import headline, layer_of_op, stack_frames

WORKER = """Caught ValueError in DataLoader worker process 0.
Original Traceback (most recent call last):
  File "/site-packages/torch/utils/data/_utils/worker.py", line 349, in _worker_loop
    data = fetcher.fetch(index)  # type: ignore[possibly-undefined]
  File "/home/me/data.py", line 12, in __getitem__
    raise ValueError("bad sample 17")
ValueError: bad sample 17
"""
CUDA = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.11 GiB of which "
    "1.20 GiB is free. Including non-PyTorch memory, this process has 77.90 GiB memory in use."
)
TF_EAGER = (
    "{{function_node __wrapped__StatelessRandomUniformV2_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
    "OOM when allocating tensor with shape[64,268435456] and type float on "
    "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu [Op:StatelessRandomUniformV2] name: "
)


def test_a_worker_traceback_is_folded_to_its_words():
    # GIVEN a DataLoader worker's error, which carries the worker's traceback in its message
    # WHEN its headline is taken
    # THEN the frames and their source lines are gone, the words stay, and the frames are counted
    assert headline(WORKER) == "Caught ValueError in DataLoader worker process 0. ValueError: bad sample 17"
    assert stack_frames(WORKER) == 2


def test_a_message_without_frames_is_its_own_headline():
    assert headline(CUDA) == CUDA and stack_frames(CUDA) == 0
    assert headline("") == "" and headline("   ") == ""


def test_tf_wrappers_and_device_paths_are_dropped():
    assert headline(TF_EAGER) == (
        "OOM when allocating tensor with shape[64,268435456] and type float on CPU:0 by allocator cpu "
        "[Op:StatelessRandomUniformV2] name:"
    )


def test_a_tf_scope_names_the_innermost_layer_the_run_saw():
    # GIVEN the layers a Keras run saw (the model is a layer too)
    layers = [ModuleRecord(name=n, type="Dense", parent=None) for n in ("mlp", "big", "small", "block/conv")]
    # WHEN a failing op's scope is resolved (TF's uniquified copies, wrappers, nested names)
    # THEN the innermost known layer is named, or none
    assert layer_of_op("mlp_1/big_1/Relu", layers) == "big"
    assert layer_of_op("StatefulPartitionedCall/mlp/small/MatMul", layers) == "small"
    assert layer_of_op("mlp_1/conv_3/Conv2D", layers) == "block/conv"
    assert layer_of_op("mlp_1/dense_9/Relu", layers) == "mlp"
    assert layer_of_op("Relu", layers) is None and layer_of_op("x/y/Relu", []) is None
