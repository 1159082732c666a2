"""What the collector replaces for the run (Keras's `fit`, an optimizer's `apply`,
layer calls, TF's profiler starts) and puts back when it stops."""

from __future__ import annotations

from typing import Any


class Patches:
    """Attributes replaced for the run, put back in the reverse order."""

    def __init__(self) -> None:
        self._replaced: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, attr: str, replacement: Any, original: Any) -> None:
        setattr(owner, attr, replacement)
        self._replaced.append((owner, attr, original))

    def undo(self) -> None:
        for owner, attr, original in reversed(self._replaced):
            setattr(owner, attr, original)
        self._replaced = []


def wrapped(wrapper: Any, original: Any) -> Any:
    """`wrapper` stands in for `original` on its class for the run, and says so."""
    wrapper.__memprofile_original__ = original
    wrapper.__wrapped__ = original
    wrapper.__name__ = getattr(original, "__name__", wrapper.__name__)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    return wrapper


def defining_class(cls: Any, method: str) -> Any:
    """The class that defines `method` for `cls` (Keras's `fit` is its
    backend trainer's): patched there for the run and put back."""
    if cls is None:
        return None
    return next((c for c in cls.__mro__ if method in c.__dict__), None)
