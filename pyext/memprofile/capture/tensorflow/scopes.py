"""Layer scopes for eager code: its op names carry no Keras name scopes, so for
the run each eager Keras layer call and each eager GradientTape.gradient opens
a profiler scope (a TraceMe) that the memory events fall inside."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from memprofile.capture.base import RawNote
from memprofile.capture.tensorflow import compat
from memprofile.capture.tensorflow.attribution import BACKWARD_SCOPE, LAYER_SCOPE, SCOPE_PREFIX
from memprofile.capture.tensorflow.patching import Patches, wrapped


def patch_scopes(tf: Any, patches: Patches, recording: Callable[[], bool], notes: list[RawNote]) -> None:
    """Keras's Layer.__call__ and TF's GradientTape.gradient open a scope while
    `recording()` and eager; a TF without TraceMe gets a note instead."""
    TraceMe = compat.traceme()
    if TraceMe is None:
        notes.append(
            (
                "tf_compat_traceme",
                f"TF {tf.__version__} has no _pywrap_traceme.TraceMe: "
                f"eager Keras layer calls are not placed on their layers (traced ones, as in "
                f"fit, are)",
            )
        )
        return
    executing_eagerly = tf.executing_eagerly

    def wrap(cls: Any, method: str, name_of: Callable[[Any], str]) -> None:
        original = cls.__dict__.get(method)
        if original is None or hasattr(original, "__memprofile_original__"):
            return

        def scoped(obj: Any, *args: Any, **kwargs: Any) -> Any:
            # Traced: the op names carry the scopes; outside the detail nothing records them.
            if not recording() or not executing_eagerly():
                return original(obj, *args, **kwargs)
            scope = TraceMe(SCOPE_PREFIX + name_of(obj))
            try:
                return original(obj, *args, **kwargs)
            finally:
                scope.Stop()

        patches.replace(cls, method, wrapped(scoped, original), original)

    keras = sys.modules.get("keras")
    layer_cls = getattr(getattr(keras, "layers", None), "Layer", None)
    if layer_cls is not None:
        wrap(layer_cls, "__call__", lambda layer: f"{LAYER_SCOPE}{id(layer)}/{layer.name}")
    wrap(tf.GradientTape, "gradient", lambda tape: BACKWARD_SCOPE)


def patch_gradients(tf: Any, patches: Patches, recording: Callable[[], bool], seen: Callable[[Any, Any], None]) -> None:
    """An eager GradientTape.gradient tells its gradients and their variables:
    `seen(sources, gradients)` while `recording()` (the capture finds the
    blocks by address; an eager backward names no layer)."""
    cls = tf.GradientTape
    original = cls.__dict__.get("gradient")
    if original is None:
        return
    executing_eagerly = tf.executing_eagerly

    def gradient(tape: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(tape, target, sources, *args, **kwargs)
        if recording() and executing_eagerly():
            try:
                seen(sources, result)
            except Exception:
                pass  # the gradients' kind is a guess then, as before
        return result

    patches.replace(cls, "gradient", wrapped(gradient, original), original)
