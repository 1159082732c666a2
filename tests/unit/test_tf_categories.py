"""TF blocks' kinds from the facts the trace and the namespace give
(capture/tensorflow/attribution.py categorise), without TensorFlow: the rules
that the traces of tests/tensorflow exercise, on logs built here."""

from __future__ import annotations

from memprofile.capture.base import AllocationLog
from memprofile.capture.tensorflow.attribution import Side, categorise
from memprofile.capture.tensorflow.keras_model import KerasWorld, LayerInfo

MiB = 1 << 20


def _log(*rows: tuple[int, str, str, str, list[int] | None, str]) -> tuple[AllocationLog, Side]:
    """Rows of (bytes, op, layer, phase, shape, dtype), made in that order and freed at the end."""
    log, side = AllocationLog(device="cpu", source="cpu"), Side()
    for k, (size, op, layer, phase, shape, dtype) in enumerate(rows):
        log.add(size, 0.1 * (k + 1), k, op=op, layer=layer, phase=phase, shape=shape, dtype=dtype)
        log.t_free[-1] = log.seq_free[-1] = 10.0 + k
        side.add("", op)
    return log, side


def test_a_block_of_no_op_the_size_of_an_array_fit_was_given_is_an_input():
    # GIVEN fit's copy of an 8 MiB x (a block no op made) and a block of another size made by no op
    world = KerasWorld(input_sizes={8 * MiB})
    log, side = _log((8 * MiB, "", "", "other", [8192, 256], "float32"), (3 * MiB, "", "", "other", None, ""))
    # WHEN the blocks are categorised
    categorise(log, side, world, {}, "cpu")
    # THEN the copy is an input (on the input pipeline), the other block not
    assert (log.category[0], log.layer[0]) == ("input", "(input pipeline)")
    assert log.category[1] != "input"


def test_a_backward_block_takes_a_layers_gradient_only_as_a_float_of_a_taped_layer():
    # GIVEN two layers with a [1]-shaped variable, one of a model an eager tape differentiated
    world = KerasWorld()
    for path, vid in (("trained_out", 1), ("bystander_out", 2)):
        world.layers[path] = LayerInfo(path=path, type="Dense", parent=None, keras_names=(path,))
        world.layers[path].trainable_shapes = {"[1]"} if path == "bystander_out" else {"[1]", "[4,1]"}
        world.var_paths[vid] = path
    world.gradients = [(0xABC, 1, 0.5)]  # the tape returned a gradient of trained_out's variable
    log, side = _log(
        (4, "BroadcastGradientArgs", "", "backward", [1], "int32"),  # a shape computation of the backward
        (16, "MatMul", "", "backward", [4, 1], "float32"),  # trained_out's kernel's shape: only it has it
        (4, "Sum", "", "backward", [1], "float32"),  # a [1] float: trained_out's bias (the bystander is untaped)
    )
    # WHEN the blocks are categorised
    categorise(log, side, world, {}, "cpu")
    # THEN the int32 shape block is no gradient, and no block is the bystander's
    assert log.category[0] != "gradient"
    assert (log.category[1], log.layer[1]) == ("gradient", "trained_out")
    assert (log.category[2], log.layer[2]) == ("gradient", "trained_out")
