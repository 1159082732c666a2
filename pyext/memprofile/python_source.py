"""A Python file's text as the interpreter reads it: its coding cookie
(PEP 263), a UTF-8 BOM, UTF-8 by default; a file python would refuse raises
the SyntaxError python gives for it."""

from __future__ import annotations

import codecs
import io
import tokenize
from pathlib import Path


def read_python_source(path: str | Path) -> str:
    """The text of `path`, decoded as `python path` decodes it (a BOM is
    dropped). Raises SyntaxError where python refuses the file, with
    python's own message, and OSError where it cannot be read."""
    raw = Path(path).read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return raw.decode(encoding)
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise _pythons_error(raw, str(path), exc) from None


def _pythons_error(raw: bytes, filename: str, problem: Exception) -> SyntaxError:
    """The SyntaxError python raises for `raw`. The interpreter's file reader
    words two of them itself (invalid UTF-8 with no cookie, a cookie naming
    no codec); compile() words the rest as python does."""
    cookie = _cookie(raw)
    if cookie is None:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            return SyntaxError(
                f"Non-UTF-8 code starting with '\\x{raw[exc.start]:02x}' in file {filename} on line "
                f"{line}, but no encoding declared; see https://peps.python.org/pep-0263/ for details"
            )
    else:
        try:
            codecs.lookup(cookie)
        except LookupError:
            return SyntaxError(f"encoding problem: {cookie}")
    try:
        compile(raw, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return exc
    return problem if isinstance(problem, SyntaxError) else SyntaxError(str(problem))


def _cookie(raw: bytes) -> str | None:
    """The encoding a coding cookie on the first or second line names (PEP 263)."""
    for line in raw.splitlines()[:2]:
        found = tokenize.cookie_re.match(line.decode("latin-1"))
        if found:
            return found.group(1)
    return None
