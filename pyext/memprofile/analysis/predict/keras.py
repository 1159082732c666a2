"""A Keras run's memory at another batch and sequence length, from its model's layers and its
optimizer's slots (the Keras half of Will it fit; whatif/predict.py anchors it on the measured run).

- Parameters: the model's weights, exact, by dtype. Gradients: the trainable weights, in the
  variable's dtype. Optimizer slots: the built optimizer's own variables, counted; an optimizer
  not built yet from a per-class table (SLOTS, read off Keras 3's keras/src/optimizers/*.py
  `build()`). These do not change with the batch: the prediction keeps them as measured and
  says what they are.
- Activations: each layer's output shape (`layer.output.shape` of a functional or Sequential
  model, else `compute_output_shape`) at the asked batch and sequence length, times the copies a
  step keeps of it (COPIES), and MultiHeadAttention's internals (its query, key and value
  projections, and the S x S scores and their softmax per head). The model is affine in the batch
  at a fixed sequence length, quadratic in the sequence through attention.

A layer with no shape (a subclassed model's layers are called eagerly, with no symbolic output) is
not sized: it is named, and its activations are taken as measured.
"""

from __future__ import annotations

import ast
import math
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Optimizer slots per trainable variable, as Keras 3's `build()` adds them
#: (https://github.com/keras-team/keras/tree/master/keras/src/optimizers): full-size copies,
#: by class name; a callable gets the optimizer (SGD's momentum, RMSprop's momentum and centered,
#: Adam's amsgrad). Adafactor is sized per variable (factored_bytes).
SLOTS: dict[str, Any] = {
    "SGD": lambda o: 1 if getattr(o, "momentum", 0) else 0,
    "Adam": lambda o: 3 if getattr(o, "amsgrad", False) else 2,
    "AdamW": lambda o: 3 if getattr(o, "amsgrad", False) else 2,
    "Nadam": 2,
    "Adamax": 2,
    "RMSprop": lambda o: 1 + (1 if getattr(o, "momentum", 0) else 0) + (1 if getattr(o, "centered", False) else 0),
    "Adagrad": 1,
    "Adadelta": 2,
    "Ftrl": 2,
    "Lion": 1,
    "Lamb": 2,
    "Adafactor": 1,  # the full velocity, plus the factored row and column (factored_bytes)
}

#: Copies of a layer's output a step keeps live at its peak, fit on CPU runs of Keras 3.15 / TF 2.21
#: (tests/tensorflow/test_predict_keras.py; docs/will_it_fit.md has the errors). Training keeps each
#: output for the backward pass; a Dense or Conv with an activation keeps its output before the
#: activation for part of the step (1.5). Inference keeps a layer's input and output only while the
#: layer runs (KerasModel.activation_bytes), an activated layer's two at once.
COPIES = {
    "train": {"default": 1.0, "activated": 1.5, "view": 0.0},
    "infer": {"default": 1.0, "activated": 2.0, "view": 0.0},
}
#: Attention's S x S scores per head: the scores, their softmax and, in the backward pass, the
#: softmax's gradient, and part of the scores' (one more with attention dropout); fit on CPU runs of
#: two encoders (4 and 8 heads), at 4x and 8x the batch and 2x the sequence.
SCORE_COPIES = 3.25
#: Activations made of several elementwise ops keep more copies of the layer's output in training:
#: gelu's exact form (x/2 (1 + erf(x/sqrt 2))) held 5 on a CPU run of an encoder's feed-forward.
ACTIVATION_COPIES = {"gelu": 5.0}
#: Layers and ops whose output takes no new buffer in TF: views of their input, and elementwise sums
#: (`h + a`, Add), whose CPU kernels write into an input that nothing else holds.
VIEWS = frozenset({"InputLayer", "Flatten", "Reshape", "Permute", "Identity", "Masking", "Add", "Subtract"})
#: Layers sized here (the issue's list, and the shape-preserving ones around them).
MODELLED = frozenset(
    {
        "Dense",
        "EinsumDense",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "Conv2DTranspose",
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "Embedding",
        "MultiHeadAttention",
    }
)


@dataclass
class KerasSource:
    """What a Keras prediction reads: the cell's code and the names it runs in (the notebook's
    globals, which live on anyway; never a function's locals). Nothing in it is run again."""

    source: str
    namespace: Mapping[str, Any]
    #: Optimizer steps the run made (0: inference).
    steps: int = 0


@dataclass
class Tensor:
    """One activation: its dims ("b": the batch, "s": the sequence, or a size), bytes per element,
    and how many copies a step keeps."""

    layer: str
    what: str
    dims: tuple[int | str, ...]
    itemsize: int
    copies: float = 1.0

    def nbytes(self, batch: float, seq: float) -> float:
        n = float(self.itemsize)
        for d in self.dims:
            n *= batch if d == "b" else seq if d == "s" else int(d)
        return n


@dataclass
class KerasModel:
    """The Keras run's memory, as far as its layers and optimizer tell it."""

    models: list[str] = field(default_factory=list)
    parameter_bytes: int = 0
    gradient_bytes: int = 0
    optimizer_bytes: int = 0
    #: Where the optimizer's figure comes from ("built": its variables; "table": SLOTS).
    optimizer_how: str = ""
    tensors: list[Tensor] = field(default_factory=list)
    training: bool = True
    #: Layers it could not size (qualified names).
    unsized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def activation_bytes(self, batch: int | float, seq: int | float) -> int:
        """Activations live at the step's peak, at `batch` samples of `seq` tokens."""
        if self.training:
            return round(sum(t.nbytes(batch, seq) * t.copies for t in self.tensors))
        # inference: a layer's input and output live while it runs, the rest freed
        by_layer: dict[str, float] = {}
        for t in self.tensors:
            by_layer[t.layer] = by_layer.get(t.layer, 0.0) + t.nbytes(batch, seq) * t.copies
        sizes = list(by_layer.values())
        return round(max((a + b for a, b in zip(sizes, sizes[1:])), default=sum(sizes)))


def _itemsize(dtype: Any) -> int:
    import numpy as np

    name = getattr(dtype, "name", None) or str(dtype)
    try:
        return int(np.dtype(name).itemsize)
    except TypeError:
        return 2 if "bfloat16" in name else 4


def is_keras_model(value: Any) -> bool:
    keras = _keras()
    return keras is not None and isinstance(value, keras.Model)


def is_keras_optimizer(value: Any) -> bool:
    keras = _keras()
    return keras is not None and isinstance(value, keras.optimizers.Optimizer)


def _keras() -> Any:
    """Keras where the run imported it (never imported here: a torch run pays nothing)."""
    return sys.modules.get("keras")


def names_read(source: str, namespace: Mapping[str, Any]) -> list[str]:
    """The names the cell reads, and the globals read by the functions it calls by name (a
    training step written in another cell), in the order first seen."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    seen: dict[str, None] = {}
    todo = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen[name] = None
        value = namespace.get(name)
        code = getattr(getattr(value, "__wrapped__", value), "__code__", None)
        mine = getattr(value, "__globals__", None)
        # a notebook function, or (a `@profiled` call's namespace: whatif/call.py) its module's
        if (
            isinstance(code, types.CodeType)
            and mine is not None
            and (mine is namespace or mine is getattr(namespace, "globals", None))
        ):
            todo.extend(_code_names(code))
    return list(seen)


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def models_and_optimizers(source: KerasSource) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Keras models and optimizers the cell uses, by name: what it reads, and a compiled
    model's own optimizer."""
    models: dict[str, Any] = {}
    optimizers: dict[str, Any] = {}
    for name in names_read(source.source, source.namespace):
        value = source.namespace.get(name)
        if is_keras_model(value) and all(value is not m for m in models.values()):
            models[name] = value
        elif is_keras_optimizer(value) and all(value is not o for o in optimizers.values()):
            optimizers[name] = value
    for name, model in models.items():
        opt = getattr(model, "optimizer", None)
        if opt is not None and is_keras_optimizer(opt) and all(opt is not o for o in optimizers.values()):
            optimizers[f"{name}.optimizer"] = opt
    return models, optimizers


def _outputs(layer: Any) -> list[Any] | None:
    """The layer's symbolic outputs (shape and dtype), or None where it has none."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    flat = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) else [out]
    return [t for t in flat if hasattr(t, "shape")] or None


class _Dims:
    """Turns a symbolic shape into Tensor dims: dim 0 the batch, dim 1 the sequence of a
    sequence model (None, or the measured length)."""

    def __init__(self, batch0: int | None, seq0: int | None, sequence: bool) -> None:
        self.batch0, self.seq0, self.sequence = batch0, seq0, sequence

    def __call__(self, shape: Any, tokens: bool = False) -> tuple[int | str, ...] | None:
        dims: list[int | str] = []
        for i, d in enumerate(tuple(shape)):
            if i == 0:
                dims.append("b")
            elif i == 1 and self.sequence and (d is None or d == self.seq0) and (len(shape) >= 3 or tokens):
                dims.append("s")
            elif d is None:
                return None  # a free dimension it cannot fill in
            else:
                dims.append(int(d))
        return tuple(dims)


def _activated(layer: Any) -> bool:
    act = getattr(layer, "activation", None)
    return act is not None and getattr(act, "__name__", "linear") != "linear"


def _layer_tensors(layer: Any, name: str, dims: _Dims, copies: dict[str, float]) -> list[Tensor] | None:
    """The tensors one layer makes, or None where it cannot be sized."""
    kind = type(layer).__name__
    outs = _outputs(layer)
    if outs is None:
        return None
    made = []
    for t in outs:
        d = dims(t.shape)
        if d is None:
            return None
        kept = copies["view" if kind in VIEWS else "activated" if _activated(layer) else "default"]
        if copies is COPIES["train"] and _activated(layer):
            kept = ACTIVATION_COPIES.get(getattr(layer.activation, "__name__", ""), kept)
        made.append(Tensor(name, "output", d, _itemsize(t.dtype), kept))
    if kind == "MultiHeadAttention" and made and len(made[0].dims) == 3:
        made.extend(_attention(layer, name, made[0]))
    return made


def _attention(layer: Any, name: str, out: Tensor) -> list[Tensor]:
    """MultiHeadAttention's internals (keras/src/layers/attention/multi_head_attention.py): the
    query, key and value projections, the S x S scores and their softmax per head (and the dropout's
    copy of them), and the heads' output before the output projection."""
    b, s = out.dims[0], out.dims[1]
    h, dk, dv = layer.num_heads, layer.key_dim, layer.value_dim or layer.key_dim
    size = out.itemsize
    scores = SCORE_COPIES + (1 if getattr(layer, "dropout", 0) else 0)
    return [
        Tensor(name, "query, key", (b, s, h, dk), size, 2.0),
        Tensor(name, "value, heads' output", (b, s, h, dv), size, 2.0),
        Tensor(name, "scores per head", (b, h, s, s), size, scores),
    ]


def _walk(model: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(qualified name, layer), a nested model's layers in its place; a subclassed model's layers
    by the attribute that holds them (gated.inner), the others by their Keras name."""
    attributes = {id(v): k for k, v in vars(model).items() if not k.startswith("_")}
    # a functional model's operations: its layers and the ops between them (`h + a`: an Add)
    ops = getattr(model, "operations", None) if hasattr(model, "_operations") else None
    for layer in ops or getattr(model, "layers", []):
        own = attributes.get(id(layer), layer.name)
        name = f"{prefix}.{own}" if prefix else own
        if is_keras_model(layer) and getattr(layer, "layers", None):
            yield from _walk(layer, name)
        elif type(layer).__name__ != "InputLayer":  # the model's inputs are counted as inputs
            yield name, layer


def _is_sequence(model: Any, seq0: int | None) -> bool:
    """Token ids (integer, rank 2) or a sequence of vectors (rank 3) in: dim 1 is the sequence."""
    for t in getattr(model, "inputs", None) or []:
        shape, dtype = tuple(t.shape), str(getattr(t, "dtype", ""))
        if len(shape) == 3 or (len(shape) == 2 and "int" in dtype):
            return shape[1] is None or seq0 is None or shape[1] == seq0
    return False


def model_tensors(
    model: Any, name: str, batch0: int | None, seq0: int | None, training: bool = True
) -> tuple[list[Tensor], list[str]]:
    """The activations of one model's layers and inputs; the layers it could not size."""
    copies = COPIES["train" if training else "infer"]
    dims = _Dims(batch0, seq0, _is_sequence(model, seq0))
    tensors: list[Tensor] = []
    unsized: list[str] = []
    for t in getattr(model, "inputs", None) or []:
        d = dims(t.shape, tokens="int" in str(getattr(t, "dtype", "")))
        if d is not None:
            tensors.append(Tensor(name, "input", d, _itemsize(t.dtype)))
    for qualified, layer in _walk(model, name):
        made = _layer_tensors(layer, qualified, dims, copies)
        if made is None:
            unsized.append(qualified)
        else:
            tensors.extend(made)
    if not getattr(model, "layers", None):
        unsized.append(name)
    return tensors, unsized


def _nbytes(variables: Any) -> int:
    return sum(math.prod(int(d) for d in v.shape) * _itemsize(v.dtype) for v in variables)


def factored_bytes(optimizer: Any, variables: list[Any]) -> int:
    """Adafactor's row and column factors (rank >= 2) and its placeholders (rank < 2)."""
    n = 0
    for v in variables:
        shape = tuple(int(d) for d in v.shape)
        size = _itemsize(v.dtype)
        n += (math.prod(shape[:-1]) + math.prod(shape[:-2] + shape[-1:])) * size if len(shape) >= 2 else 2 * 4
    return n


def optimizer_bytes(optimizer: Any, trainable: list[Any]) -> tuple[int, str]:
    """(bytes, how): the built optimizer's variables, counted; else SLOTS for its class."""
    if getattr(optimizer, "built", False):
        return _nbytes(optimizer.variables), "its variables, counted"
    kind = type(optimizer).__name__
    slots = SLOTS.get(kind)
    if slots is None:
        return 0, f"{kind}: not built and not in the table of Keras 3's optimizers (slots not counted)"
    per = slots(optimizer) if callable(slots) else slots
    # + its scalars: iterations (int64) and the learning rate (float32); Nadam's u_product too
    n = per * _nbytes(trainable) + 12 + (4 if kind == "Nadam" else 0)
    if kind == "Adafactor":
        n += factored_bytes(optimizer, trainable)
    return n, f"{kind} not built yet: {per} slot(s) per weight (Keras 3's {kind}.build)"


def _nested(model: Any, others: list[Any]) -> bool:
    """`model` is a layer of another of `others` (counted there)."""
    for other in others:
        if other is not model and any(layer is model for layer in getattr(other, "_flatten_layers", lambda: [])()):
            return True
    return False


def keras_model(source: KerasSource, batch0: int | None, seq0: int | None) -> KerasModel:
    """The run's models and optimizers as this module sees them (nothing is run)."""
    found, optimizers = models_and_optimizers(source)
    made = KerasModel(training=source.steps > 0)
    seen: set[int] = set()
    for name, model in found.items():
        if _nested(model, list(found.values())):
            continue
        made.models.append(name)
        for v in model.weights:
            if id(v) not in seen:
                seen.add(id(v))
                made.parameter_bytes += _nbytes([v])
        tensors, unsized = model_tensors(model, name, batch0, seq0, made.training)
        made.tensors.extend(tensors)
        made.unsized.extend(unsized)
    trainable = [v for m in found.values() for v in m.trainable_weights]
    if made.training:
        made.gradient_bytes = _nbytes({id(v): v for v in trainable}.values())
    hows = []
    for name, opt in optimizers.items():
        n, how = optimizer_bytes(opt, trainable)
        made.optimizer_bytes += n
        hows.append(f"{name}: {how}")
    made.optimizer_how = "; ".join(hows)
    return made


def _int(node: ast.AST, namespace: Mapping[str, Any]) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        value = namespace.get(node.id)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


#: Integer names a loop's batch is commonly held in.
BATCH_NAMES = ("batch_size", "BATCH_SIZE", "batch", "bs", "BATCH")


def source_batch(source: KerasSource) -> int | None:
    """The batch the cell asks for: `fit`/`predict`/`evaluate(batch_size=...)`, a tf.data
    dataset it reads (its static batch dimension), or an int named like a batch size."""
    try:
        tree = ast.parse(source.source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("fit", "predict", "evaluate"):
                for kw in node.keywords:
                    if kw.arg == "batch_size" and (n := _int(kw.value, source.namespace)):
                        return n
    names = names_read(source.source, source.namespace)
    for name in names:
        spec = getattr(source.namespace.get(name), "element_spec", None)
        first = (list(spec.values()) if isinstance(spec, dict) else list(spec) if isinstance(spec, tuple) else [spec])[
            :1
        ]
        shape = getattr(first[0], "shape", None) if first else None
        if shape is not None and len(shape) and shape[0] is not None:
            return int(shape[0])
    for name in BATCH_NAMES:
        value = source.namespace.get(name)
        if name in names and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


#: TF's BFC allocator (tensorflow/core/common_runtime/bfc_allocator.cc): with memory growth its
#: first region is 2 MiB and each new region doubles the last; chunks are multiples of 256 B.
BFC_FIRST_REGION = 2 << 20
BFC_SOURCE = "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/core/common_runtime/bfc_allocator.cc"


def bfc_reserved(allocated: int, capacity: int | None = None) -> int:
    """What TF's BFC allocator holds for `allocated` live bytes with memory growth on: regions of
    2, 4, 8, ... MiB until they cover it (fragmentation inside the regions is not modelled)."""
    reserved, region = 0, BFC_FIRST_REGION
    while reserved < allocated:
        reserved += region
        region *= 2
    return min(reserved, capacity) if capacity else reserved
