"""The user's own TF profiler comes first (TF allows one session): for the run,
each Python entry that starts a session of the user's (compat.profiler_starts)
first tells the collector, which ends its detail; and the notes that say what
the profile lacks then."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memprofile.capture.base import RawNote
from memprofile.capture.tensorflow import compat
from memprofile.capture.tensorflow.patching import Patches, wrapped

#: The detail ended for the user's own TF profiler: the reason and the note's code.
USER_PROFILER = "user_profiler"
USER_PROFILER_NOTE = "tf_user_profiler"


def patch_profiler_starts(patches: Patches, before: Callable[[], None]) -> None:
    """Each entry that starts the user's profiler calls `before()` first, then
    starts theirs. A module that took the wrapper by name meanwhile keeps a
    harmless one: `before` does nothing once the run is over."""

    def before_users_profiler(original: Any) -> Any:
        def users_profiler_start(*args: Any, **kwargs: Any) -> Any:
            before()
            return original(*args, **kwargs)

        return wrapped(users_profiler_start, original)

    for module, attr, original in compat.profiler_starts():
        if hasattr(original, "__memprofile_original__"):
            continue
        patches.replace(module, attr, before_users_profiler(original), original)


def running_before_note() -> RawNote:
    """The user's profiler ran before the cell: it was left alone."""
    return (
        USER_PROFILER_NOTE,
        "a TensorFlow profiler was already running "
        "(tf.profiler.experimental.start, or a profiler server's capture, started before "
        "the cell): memprofile left it alone, as TensorFlow allows one profiler at a time, "
        "so this profile has no TensorFlow allocation detail (ops, layers, tensor kinds, "
        "timeline); TF's memory counters (get_memory_info), host memory, the training steps "
        "and what the namespace keeps are measured. Stop yours before the cell for the "
        "detail",
    )


def started_in_cell_note(when: float) -> RawNote:
    """The user's profiler started in the cell while memprofile's recorded."""
    return (
        USER_PROFILER_NOTE,
        f"your TensorFlow profiler started at {when:.3f} s: "
        f"memprofile's own (TensorFlow allows one) stopped there, so yours records the "
        f"rest of the cell in full; TensorFlow allocation detail (ops, layers, tensor "
        f"kinds) covers the cell up to then; TF's memory counters, host memory, the "
        f"training steps and the namespace the whole cell",
    )


def started_before_window_note(when: float, window: str) -> RawNote:
    """The user's profiler started in the cell before memprofile's detail window opened."""
    return (
        USER_PROFILER_NOTE,
        f"your TensorFlow profiler started at {when:.3f} s, before "
        f"memprofile's detail window (steps {window}) opened: TensorFlow "
        f"allows one profiler, so memprofile recorded no TensorFlow allocation detail; "
        f"TF's memory counters, host memory, the training steps and the namespace are "
        f"measured",
    )
