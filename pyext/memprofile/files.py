"""The files memprofile writes and reads, done so that neither can hurt.

Writing is atomic: the bytes go to a temporary file in the same folder,
flushed and fsync'd, then os.replace() puts it in place. A full disk, a file
size limit or a kill part-way leaves the old file as it was (or none) and no
temporary file: never a truncated report or a 0-byte profile in place of a
good one.

Reading is bounded by the bytes actually read, not by what stat() says: a
character device (/dev/zero), a FIFO, a socket or a folder is refused in one
line before anything is read from it (it is opened non-blocking, so a FIFO
with no writer cannot hang the open), and a regular file is read with a cap
that counts bytes; gzip data is inflated with a cap too (a "gzip bomb").

A URL (`s3://bucket/key`, any fsspec URL; storage.py) is written and read
through fsspec with the same guarantees: one whole object or none, reads
bounded and checked the same way.
"""

from __future__ import annotations

import os
import secrets
import stat
import zlib
from pathlib import Path

from memprofile import storage
from memprofile.errors import ProfileFormatError, writing
from memprofile.storage import Url

_READ_CHUNK = 1 << 20
_INFLATE_CHUNK = 4 << 20
#: The most of a trace file `memprofile import` reads, gzipped or inflated: a
#: kineto trace of that size already parses into tens of GB of Python objects.
MAX_TRACE_BYTES = 4 << 30
#: Gzip that inflates past this many times its size is not a trace (they compress 5-30x) but a bomb.
MAX_TRACE_INFLATE_RATIO = 200
_RATIO_FREE_BYTES = 64 << 20

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a st_mode that is not a regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


# -- writing -------------------------------------------------------------------


def write_atomic(path: str | Path | Url, data: bytes | str) -> Path | Url:
    """Write `data` (str: as UTF-8) to `path` (or a URL: one whole object)
    all or nothing; OutputPathError (one line: why, what to do) when it
    cannot be written."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    where = storage.as_target(path)
    if isinstance(where, Url):
        return storage.write(where, payload)
    path = where
    # A link is followed as a plain write would: the file it names is replaced, not the link.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        existing = os.stat(target)
    except OSError:
        existing = None
    with writing(path):  # an OSError is one line: why, what to do
        if existing is not None and not stat.S_ISREG(existing.st_mode) and not stat.S_ISDIR(existing.st_mode):
            # /dev/null, a FIFO, /dev/stdout: nothing there to keep, and it must not be replaced by a file
            with open(target, "wb") as f:
                f.write(payload)
            return path
        _replace_with(target, payload, None if existing is None else stat.S_IMODE(existing.st_mode))
    return path


def _replace_with(target: Path, payload: bytes, mode: int | None) -> None:
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never someone else's file; 0o666 less the umask, as a plain open() would make it
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if mode is not None:  # overwriting keeps the file's permissions
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:  # a full disk, a size limit, Ctrl-C: the temporary file goes, the old file stays
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every filesystem can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------


def read_bounded(path: str | Path | Url, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path` (or the object at a URL), at
    most `limit` of them; ProfileFormatError (one line) for a missing or
    unreadable file, anything that is not a regular file, or a file longer
    than `limit` (counted as read: /proc files and growing files say nothing
    true in st_size)."""
    where = storage.as_target(path)
    if isinstance(where, Url):
        return storage.read(where, limit, what)
    path = where
    refuse_special(path, what)  # a socket cannot even be opened: say what it is
    try:
        # non-blocking: a FIFO put here since the check above still cannot hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ProfileFormatError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ProfileFormatError(f"cannot read {what} {str(path)!r}: it is {kind_of(mode)}, not a file")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ProfileFormatError(
                    f"cannot read {what} {str(path)!r}: more than {_size(limit)}, the limit for a {what}"
                )
    except OSError as exc:
        raise ProfileFormatError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def refuse_special(path: str | Path, what: str = "file") -> None:
    """ProfileFormatError (one line) unless `path` is a regular file (or a
    link to one): said before anything opens it, so a FIFO cannot block."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ProfileFormatError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ProfileFormatError(f"cannot read {what} {str(path)!r}: it is {kind_of(mode)}, not a file")


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip `data` (one or more members) in chunks, refusing it as
    soon as it passes `limit` bytes: a bomb costs only the limit.
    ProfileFormatError says which (too large, cut short, corrupt)."""
    parts: list[bytes] = []
    total = 0
    try:
        while data:
            stream = zlib.decompressobj(wbits=31)
            while data:
                parts.append(stream.decompress(data, _INFLATE_CHUNK))
                total += len(parts[-1])
                if total > limit:
                    raise ProfileFormatError(f"its gzip data inflates to more than {_size(limit)}")
                data = stream.unconsumed_tail
                if stream.eof:
                    break
            if not stream.eof:
                raise ProfileFormatError("corrupt gzip data (truncated: it ends mid-stream)")
            data = stream.unused_data.lstrip(b"\0")  # gzip pads members with zeros
    except zlib.error as exc:
        raise ProfileFormatError(f"corrupt gzip data ({exc})") from None
    return b"".join(parts)


def read_trace(path: str | Path) -> bytes:
    """A trace file's bytes, gunzipped where gzipped, within MAX_TRACE_BYTES
    (and MAX_TRACE_INFLATE_RATIO past the first 64 MiB); ProfileFormatError
    (one line, naming the file) otherwise."""
    data = read_bounded(path, MAX_TRACE_BYTES, "trace")
    if data[:2] != b"\x1f\x8b":
        return data
    limit = min(MAX_TRACE_BYTES, max(_RATIO_FREE_BYTES, MAX_TRACE_INFLATE_RATIO * len(data)))
    try:
        return gunzip(data, limit)
    except ProfileFormatError as exc:
        raise ProfileFormatError(f"{path}: a gzip file cut short, damaged or too large: {exc}") from None


def _size(n: int) -> str:
    return f"{n >> 20:,} MiB" if n >= 1 << 20 else f"{n:,} bytes"
