"""One error base class; every message says what to do next."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A message is read by a person: a 26 MB value quoted in full helps no one.
MAX_MESSAGE_CHARS = 500


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    cut = limit - 40
    return f"{text[:cut]}… ({len(text) - cut:,} more characters)"


def short_repr(value: object, limit: int = 80) -> str:
    """repr(value) for a message, cut to `limit` characters (without building a huge repr first)."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return shorten(repr(value[:limit]), limit) + f" ({len(value):,} long)"
    if isinstance(value, list | dict) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value):,} items"
    return shorten(repr(value), limit)


class MemprofileError(Exception):
    """Base of every error memprofile raises on purpose."""


class ProfileFormatError(MemprofileError, ValueError):
    """A file or string that is not a readable memprofile profile."""

    def __init__(self, message: str = "") -> None:
        super().__init__(shorten(str(message)))


class CaptureError(MemprofileError, RuntimeError):
    """A collector could not start or stop."""


class OutputPathError(MemprofileError, OSError):
    """A profile or report could not be written where the user asked."""


def why_unwritable(path: Path, exc: OSError) -> str:
    """One line: what stopped the write to `path`, and what to do."""
    folder = path.parent
    code = exc.errno
    if code == errno.ENOENT and not folder.exists():
        return f"cannot write {path}: the folder {folder} does not exist; create it or choose another path"
    if code == errno.ENOTDIR or (code == errno.ENOENT and _blocked_by_file(folder)):
        return f"cannot write {path}: {_blocked_by_file(folder) or folder} is a file, not a folder; choose another path"
    if code == errno.ENOENT:  # the folder exists but takes no new files (/proc)
        return f"cannot write {path}: files cannot be created in {folder}; choose another folder"
    if code == errno.EISDIR:
        return f"cannot write {path}: it is a folder; give a file name such as {path / 'profile.html'}"
    if code in (errno.EACCES, errno.EPERM):
        return f"cannot write {path}: no permission to write in {folder}; choose a folder you can write to"
    if code == errno.EROFS:
        return f"cannot write {path}: {folder} is on a read-only filesystem; choose another folder"
    if code == errno.ENOSPC:
        return f"cannot write {path}: the disk is full; free some space or choose another disk"
    reason = exc.strerror or os.strerror(code) if code else str(exc)
    return f"cannot write {path}: {reason}; choose another path"


def _blocked_by_file(folder: Path) -> Path | None:
    """The first ancestor of `folder` that is a file (so no folder can be under it)."""
    for ancestor in (folder, *folder.parents):
        if ancestor.is_file():
            return ancestor
    return None


@contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Turn an OSError from writing `path` into a one-line OutputPathError."""
    path = Path(path)
    try:
        yield path
    except OSError as exc:
        if isinstance(exc, MemprofileError):
            raise
        error = OutputPathError(why_unwritable(path, exc))
        error.errno = exc.errno
        raise error from None
