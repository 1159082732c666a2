"""The code a `with memprofile.profile():` block runs, for the what-if engine to re-execute.

Found from the frame that opened the block: its file's text (a notebook cell's is in
linecache, as IPython registers it), the `with` statement on the frame's line, its body
dedented. At a module's top level (a notebook cell, a script's body) the names the body
reads are the module's globals, which live on anyway; in a function it reads locals too,
which the profile holds weakly (whatif/call.py).
"""

from __future__ import annotations

import ast
import linecache
import textwrap
from types import FrameType

from memprofile.whatif.call import Rerun, block_rerun


def block_source(frame: FrameType) -> str | None:
    """The body of the `with` statement `frame` is executing at a module's top level, or None
    (in a function, the text is not at hand, or the line is not a `with`)."""
    if frame.f_locals is not frame.f_globals:
        return None
    return _with_body(frame)


def block_in_function(frame: FrameType) -> Rerun | str:
    """The block `frame` (a function's) is executing, with the locals its body reads;
    or why it cannot run again."""
    body = _with_body(frame)
    if body is None:
        return "the block's source is not at hand"
    return block_rerun(body, frame)


def _with_body(frame: FrameType) -> str | None:
    lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
    if not lines:
        return None
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    found = None
    for node in ast.walk(tree):
        # the with statement whose header holds the line (its items may span lines)
        if isinstance(node, ast.With | ast.AsyncWith) and node.body and node.lineno <= line < node.body[0].lineno:
            if found is None or node.lineno >= found.lineno:
                found = node
    if found is None or found.end_lineno is None:
        return None
    body = "".join(lines[found.body[0].lineno - 1 : found.end_lineno])
    return textwrap.dedent(body)
