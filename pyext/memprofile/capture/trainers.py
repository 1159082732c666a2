"""Which framework trainer ran the training steps: Hugging Face's
`transformers.Trainer` (and its subclasses: `SFTTrainer`, a notebook's own) or
Lightning's `Trainer` (`lightning.pytorch` or `pytorch_lightning`), so advice
speaks in that trainer's switches (analysis/rules/trainers.py).

Found from the frames on the stack when the first optimizer step (or the
first model call) runs, never from the cell's text: a trainer's method is on
the stack whatever shape the code has (the cell, a function from another cell,
an imported module, `profile()`, `@profiled`, `memprofile run`). Only the
frames of the trainers' own modules are looked into (their `self`), and the
frameworks are never imported here: a trainer runs only where its module is
already in `sys.modules`.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

#: The module that defines each framework's Trainer class, by the framework's name.
TRAINER_MODULES = {
    "transformers": ("transformers.trainer",),
    "lightning": ("lightning.pytorch.trainer.trainer", "pytorch_lightning.trainer.trainer"),
}
#: Module prefixes whose frames may hold the trainer as `self` (the trainers' own code and its loops).
_FRAME_PREFIXES = ("transformers.", "lightning.pytorch.", "pytorch_lightning.")
#: At most this many frames are looked at (a deep stack: the trainer is near the cell's call).
MAX_FRAMES = 200


@dataclass
class TrainerInfo:
    """The framework trainer that ran the run's steps, with the notebook's names for it."""

    #: "transformers" or "lightning"
    framework: str
    #: Its class ("Trainer", "SFTTrainer", a notebook's subclass) and the module that defines the class.
    type: str
    module: str = ""
    #: The Lightning package it comes from ("lightning" or "pytorch_lightning"; "" for Hugging Face).
    package: str = ""
    #: The notebook's variable that holds the trainer ("" where none does: a local of a function).
    variable: str = ""
    #: Hugging Face: the variable that holds its TrainingArguments (the same object as `trainer.args`).
    args_variable: str = ""
    #: The class of its TrainingArguments ("TrainingArguments", "SFTConfig").
    args_type: str = ""
    #: The model it trains: the notebook's variable and its class (Lightning: the LightningModule).
    model_variable: str = ""
    model_type: str = ""
    #: Its settings that memory advice reads, as text (HF: per_device_train_batch_size,
    #: gradient_accumulation_steps, bf16, fp16, gradient_checkpointing, optim; Lightning:
    #: precision, accumulate_grad_batches, batch_size of its train loader where known).
    settings: dict[str, str] = field(default_factory=dict)


def _trainer_framework(obj: Any) -> str | None:
    """ "transformers" or "lightning" when `obj` is an instance of that framework's Trainer."""
    try:
        mro = type(obj).__mro__
    except Exception:
        return None
    for cls in mro:
        if cls.__name__ != "Trainer":
            continue
        for framework, modules in TRAINER_MODULES.items():
            if cls.__module__ in modules:
                return framework
    return None


def find_trainer(frame: FrameType | None) -> tuple[str, Any] | None:
    """(framework, trainer) of the innermost framework Trainer whose method is on the
    stack from `frame` outwards; None when no trainer's module is loaded or none runs."""
    if not any(m in sys.modules for modules in TRAINER_MODULES.values() for m in modules):
        return None
    seen = 0
    while frame is not None and seen < MAX_FRAMES:
        seen += 1
        module = frame.f_globals.get("__name__", "")
        # The trainer's own methods (and a subclass's, defined in the notebook) have it as `self`;
        # only frames of the trainers' packages and frames whose `self` names a Trainer are read.
        if isinstance(module, str) and (module.startswith(_FRAME_PREFIXES) or "self" in frame.f_code.co_varnames):
            found = _trainer_local(frame)
            if found is not None:
                return found
        frame = frame.f_back
    return None


def _trainer_local(frame: FrameType) -> tuple[str, Any] | None:
    """The frame's `self` when it is a framework Trainer. Before Python 3.13 `frame.f_locals`
    stores a snapshot of every local on the frame, which would keep the batch and outputs of
    the step looked at alive until the function returns (a training loop's `_inner_training_loop`:
    the whole run; the bare run frees them): the snapshot is emptied after the read. A function
    that reads its own locals() (or vars(), exec, eval) is not looked at: that dict is its own."""
    code = frame.f_code
    if "self" not in code.co_varnames or {"locals", "vars", "exec", "eval"} & set(code.co_names):
        return None
    try:
        local = frame.f_locals
        obj = local.get("self")
        if sys.version_info < (3, 13):
            local.clear()  # a tracer's next event refills it before it writes anything back
    except Exception:
        return None
    framework = _trainer_framework(obj) if obj is not None else None
    return (framework, obj) if framework is not None else None


def _text(value: Any) -> str:
    value = getattr(value, "value", value)  # enums (HF's OptimizerNames) as their value
    return str(value)


def _hf_settings(trainer: Any) -> dict[str, str]:
    args = getattr(trainer, "args", None)
    out: dict[str, str] = {}
    for name in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "bf16",
        "fp16",
        "gradient_checkpointing",
        "optim",
        "use_cpu",
    ):
        if hasattr(args, name):
            out[name] = _text(getattr(args, name))
    return out


def _lightning_settings(trainer: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("precision", "accumulate_grad_batches"):
        try:
            value = getattr(trainer, name)
        except Exception:
            continue
        out[name] = _text(value)
    try:  # the loader the fit loop built (None before the first batch)
        loader = trainer.fit_loop._combined_loader
        flat = getattr(loader, "flattened", None) or []
        sizes = {getattr(dl, "batch_size", None) for dl in flat}
        sizes.discard(None)
        if len(sizes) == 1:
            out["batch_size"] = str(sizes.pop())
    except Exception:
        pass
    return out


def describe(framework: str, trainer: Any) -> TrainerInfo:
    """The record of a trainer found on the stack (its names are filled by `name_in`)."""
    cls = type(trainer)
    info = TrainerInfo(framework=framework, type=cls.__name__, module=cls.__module__)
    if framework == "transformers":
        args = getattr(trainer, "args", None)
        info.args_type = type(args).__name__ if args is not None else ""
        model = getattr(trainer, "model", None)
        info.settings = _hf_settings(trainer)
    else:
        owner = next((c for c in cls.__mro__ if c.__name__ == "Trainer"), cls)
        info.package = owner.__module__.split(".")[0]
        try:
            model = trainer.lightning_module
        except Exception:
            model = None
        info.settings = _lightning_settings(trainer)
    info.model_type = type(model).__name__ if model is not None else ""
    return info


def _targets(info: TrainerInfo, trainer: Any) -> dict[str, Any]:
    """The objects whose variables the record names: the trainer, its arguments, its model."""
    targets = {"variable": trainer}
    if info.framework == "transformers":
        targets["args_variable"] = getattr(trainer, "args", None)
        targets["model_variable"] = getattr(trainer, "model", None)
    else:
        try:
            targets["model_variable"] = trainer.lightning_module
        except Exception:
            pass
    return {k: v for k, v in targets.items() if v is not None}


def name_in(
    info: TrainerInfo,
    targets: dict[str, Any],
    namespace: dict[str, Any],
    walk: Callable[[dict, Callable[[str, str, Any, str], bool]], None],
) -> None:
    """The notebook's variables for the trainer, its arguments and its model (top-level
    variables only: code that rebinds them must name a variable)."""
    wanted = {id(v): k for k, v in targets.items()}

    def take(variable: str, path: str, value: Any, via: str) -> bool:
        key = wanted.get(id(value))
        if key is not None and via == "variable" and path == variable and not getattr(info, key):
            setattr(info, key, variable)
        return key is not None

    walk(namespace, take)


def _ref(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: None  # not weakly referable: not named


class TrainerWatch:
    """Looks for a trainer on the stack at most a few times a run: at the first optimizer
    steps or model calls, until one is found or LOOKS are spent (a hand-written loop).
    Keeps its record (settings as they were at the step) and weak references only: a
    trainer that is a local of the user's function is not kept alive by the profiler."""

    LOOKS = 3

    def __init__(self) -> None:
        self.info: TrainerInfo | None = None
        self._refs: dict[str, Callable[[], Any]] = {}
        self._looks = 0

    def look(self, frame: FrameType | None) -> None:
        if self.info is not None or self._looks >= self.LOOKS:
            return
        self._looks += 1
        try:
            found = find_trainer(frame)
            if found is not None:
                self.info = describe(*found)
                self._refs = {k: _ref(v) for k, v in _targets(self.info, found[1]).items()}
        except Exception:  # never the user's step's failure
            self.info = None

    def record(self, namespace: dict[str, Any], walk: Callable) -> TrainerInfo | None:
        """The trainer's record, named in the namespace as it is at the run's end."""
        info, refs = self.info, self._refs
        self._refs = {}
        if info is None:
            return None
        targets = {k: obj for k, ref in refs.items() if (obj := ref()) is not None}
        try:
            name_in(info, targets, namespace, walk)
        except Exception:
            pass
        return info
