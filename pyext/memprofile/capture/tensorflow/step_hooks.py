"""How TensorFlow's collector sees a training step (the clock that counts them is
capture/steps.py): `fit` runs with one more callback, whose batch hooks begin
and end a step; outside fit, an eager optimizer `apply` ends one (a custom
loop; a traced one applies only while tracing: no steps)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

from memprofile.capture.tensorflow.patching import Patches, defining_class, wrapped


class StepHooks:
    """Keras's `fit` and its optimizers' `apply`, patched for the run to call
    `begin_step` and `end_step`. `counts(optimizer)`: whether an eager apply of
    this optimizer ends a training step (the step clock's source, while running)."""

    def __init__(
        self, tf: Any, begin_step: Callable[[], None], end_step: Callable[[], None], counts: Callable[[Any], bool]
    ) -> None:
        self._tf = tf
        self._begin_step = begin_step
        self._end_step = end_step
        self._counts = counts
        self._in_fit = 0  # fit calls running: their callback counts the steps
        #: Bytes of the NumPy arrays fit was given: fit copies each into one tensor (an input).
        self.input_sizes: set[int] = set()
        self._applying = False

    def patch(self, patches: Patches) -> None:
        keras = sys.modules.get("keras")
        model_cls = getattr(keras, "Model", None)
        optimizer_cls = getattr(getattr(keras, "optimizers", None), "Optimizer", None)
        callback_cls = getattr(getattr(keras, "callbacks", None), "Callback", None)
        fit_owner = defining_class(model_cls, "fit")
        if fit_owner is not None and callback_cls is not None:
            fit = fit_owner.__dict__["fit"]
            counted_fit = self._counted_fit(fit, self._callback(callback_cls))
            if counted_fit is not None:
                patches.replace(fit_owner, "fit", counted_fit, fit)
        apply_owner = defining_class(optimizer_cls, "apply")
        if apply_owner is not None:
            apply = apply_owner.__dict__["apply"]
            if not hasattr(apply, "__memprofile_original__"):
                patches.replace(apply_owner, "apply", self._counted_apply(apply), apply)

    def _callback(self, callback_cls: Any) -> Any:
        """The callback memprofile adds to `fit`: each batch is a training step."""
        begin_step, end_step = self._begin_step, self._end_step

        class MemprofileSteps(callback_cls):
            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                begin_step()

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                end_step()

        return MemprofileSteps()

    def _counted_fit(self, fit: Any, callback: Any) -> Any:
        if hasattr(fit, "__memprofile_original__"):
            return None
        try:
            at = list(inspect.signature(fit).parameters).index("callbacks") - 1  # after self
        except (TypeError, ValueError):
            return None
        hooks = self

        def counted_fit(model: Any, *args: Any, **kwargs: Any) -> Any:
            try:  # the arrays fit copies (their blocks are input); never the user's fit's failure
                hooks.input_sizes.update(array_sizes((*args[:2], kwargs.get("x"), kwargs.get("y"))))
            except Exception:
                pass
            if len(args) > at:
                user = args[at]
                args = (*args[:at], _with_callback(user, callback), *args[at + 1 :])
            else:
                user = kwargs.get("callbacks")
                kwargs["callbacks"] = _with_callback(user, callback)
            hooks._in_fit += 1
            try:
                return fit(model, *args, **kwargs)
            finally:
                hooks._in_fit -= 1
                _without_callback(user, callback)

        return wrapped(counted_fit, fit)

    def _counted_apply(self, apply: Any) -> Any:
        hooks = self
        executing_eagerly = self._tf.executing_eagerly

        def counted_apply(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            if hooks._in_fit or hooks._applying or not executing_eagerly():
                return apply(optimizer, *args, **kwargs)
            hooks._applying = True  # an optimizer that applies through another (loss scaling): one step
            try:
                result = apply(optimizer, *args, **kwargs)
            finally:
                hooks._applying = False
            if hooks._counts(optimizer):
                hooks._end_step()
                hooks._begin_step()
            return result

        return wrapped(counted_apply, apply)


#: Arrays smaller than this are not looked for among the run's blocks (a size alone could match another).
MIN_ARRAY_BYTES = 1 << 20


def array_sizes(values: Any, depth: int = 2) -> set[int]:
    """Bytes of the NumPy arrays among `values` (tuples, lists, dicts of them
    too, `depth` levels down), of MIN_ARRAY_BYTES or more."""
    np = sys.modules.get("numpy")
    out: set[int] = set()
    if np is None:
        return out
    stack = [(v, depth) for v in values]
    while stack:
        v, left = stack.pop()
        if isinstance(v, np.ndarray):
            if v.nbytes >= MIN_ARRAY_BYTES:
                out.add(int(v.nbytes))
        elif left > 0 and isinstance(v, (list, tuple)):
            stack.extend((item, left - 1) for item in v[:64])
        elif left > 0 and isinstance(v, dict):
            stack.extend((item, left - 1) for item in list(v.values())[:64])
    return out


def _is_callback_list(callbacks: Any) -> bool:
    keras = sys.modules.get("keras")
    callback_list = getattr(getattr(keras, "callbacks", None), "CallbackList", None)
    return callback_list is not None and isinstance(callbacks, callback_list)


def _with_callback(callbacks: Any, ours: Any) -> Any:
    """The user's callbacks, then ours: their batch-end work is part of the step."""
    if callbacks is None:
        return [ours]
    if _is_callback_list(callbacks):  # fit uses a CallbackList as given: ours joins it for the call
        callbacks.callbacks.append(ours)
        return callbacks
    if isinstance(callbacks, (list, tuple)):
        return [*callbacks, ours]
    return [callbacks, ours]


def _without_callback(callbacks: Any, ours: Any) -> None:
    if _is_callback_list(callbacks) and ours in callbacks.callbacks:
        callbacks.callbacks.remove(ours)
