"""What the notebook's namespace keeps after a run: the records the
namespace collector (capture/namespace.py) makes, typed where they are made.
The Profile carries them as they are (model/profile.py re-exports them; the
JSON Schema is generated from these classes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class KeptObject:
    """A large array or tensor reachable from the notebook's namespace after the
    run: by a variable (`name` is its path: `cache["x"]`, `model_out[0]`) or by
    IPython's output cache (`Out[12]`, `_`)."""

    name: str
    bytes: int
    type: str  # "torch.Tensor", "tf.Tensor", "tf.Variable", "numpy.ndarray"
    shape: list[int]
    dtype: str
    device: str
    via: Literal["variable", "output_cache"]
    #: It was not there, or not this object, when the run started.
    new: bool = False
    #: A torch tensor whose autograd graph still saves tensors for a backward
    #: that has not run (after backward() the graph holds nothing: False).
    graph: bool = False
    #: Bytes the graph saves (parameters excluded): what `.detach()` frees.
    graph_bytes: int = 0
    #: Of graph_bytes, what no larger kept tensor's graph saves too: summed over kept
    #: tensors, what their graphs save together (detaching all of them frees it).
    graph_own_bytes: int = 0


@dataclass
class GrownItem:
    """The largest array or tensor among what a container gained."""

    type: str
    shape: list[int]
    dtype: str
    device: str
    bytes: int


@dataclass
class GrownContainer:
    """A list, dict or deque of the namespace (`history`, `stats["loss"]`)
    that gained arrays or tensors during the run: how a training loop keeps
    something per step. What it gained only (all of it where `new`)."""

    name: str
    #: Items gained, and its length at the end.
    added: int
    length: int
    #: Bytes the gained arrays hold (each storage once), and bytes their
    #: autograd graphs still save for a backward that has not run.
    bytes: int
    graph_bytes: int
    item: GrownItem
    #: Made (or bound to another object) during the run.
    new: bool = False
    #: "list", "dict" or "deque".
    type: str = "list"
    #: What each gained item is: "array" (a tensor or array itself), "tuple",
    #: "list" or "dict" of them (looked into one level), or "mixed".
    items: str = "array"
