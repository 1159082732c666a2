"""What a framework's error message says, without the stack trace it carries.

TensorFlow puts the Python stack that defined the failing node inside the
exception's message ("Detected at node mlp_1/big_1/Relu defined at (most
recent call last): File ..." and ~55 more frames, then the line that matters,
then a hint); a DataLoader worker's error carries its worker's traceback. The
card leads with the failing op, layer and bytes, then this headline; the whole
message stays in `ErrorInfo.message`, folded on the card."""

from __future__ import annotations

import re
from collections.abc import Iterable

from memprofile.capture.base import ModuleRecord

_STACK_HEADER = re.compile(
    r"^\s*(Detected at node .* defined at |(Original )?Traceback )\(most recent call last\):\s*$"
)
_FRAME = re.compile(r'^\s*File "')
# TF's advice about RunOptions (not reachable from Keras or eager code) and its function's name.
_NOISE = re.compile(r"^\s*(Hint: |\[Op:__inference_)")
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_NODE_LINE = re.compile(r"^\s*\[\[\{\{node [^}]*\}\}\]\]\s*$")
_TF_DEVICE = re.compile(r"/job:[^/\s]+/replica:\d+/task:\d+/device:")
_UNIQUIFIED = re.compile(r"_\d+$")
#: TF's wrappers around an op's scope (function calls, the distribution strategy).
_WRAPPERS = {"StatefulPartitionedCall", "PartitionedCall", "while", "cond"}
MAX_HEADLINE = 400


def stack_frames(message: str) -> int:
    """How many stack frames the message carries (0: none to fold)."""
    return sum(1 for line in message.splitlines() if _FRAME.match(line))


def headline(message: str) -> str:
    """The message's own words: its stack frames, their source lines, TF's hint and wrappers dropped."""
    kept: list[str] = []
    in_frame = False
    for line in message.splitlines():
        if _STACK_HEADER.match(line):
            continue
        if _FRAME.match(line):
            in_frame = True
            continue
        # a frame's source line is indented under it; a blank line ends TF's frame
        if in_frame and (not line.strip() or line.startswith("    ")):
            continue
        in_frame = False
        if _NOISE.match(line) or _NODE_LINE.match(line) or not line.strip():
            continue
        kept.append(line.strip())
    # TF's "Graph execution error:" says nothing once the reason follows it
    if len(kept) > 1 and kept[0].rstrip(":") in {"Graph execution error", "Exception encountered"}:
        kept = kept[1:]
    text = _TF_DEVICE.sub("", _FUNCTION_NODE.sub("", " ".join(kept))).strip()
    if not text:
        return message.strip()[:MAX_HEADLINE]
    return text if len(text) <= MAX_HEADLINE else text[: MAX_HEADLINE - 1] + "…"


def layer_of_op(op: str, modules: Iterable[ModuleRecord]) -> str | None:
    """The layer a TF op's scope names ("mlp_1/big_1/Relu" -> "big"): the innermost scope
    component that, without TF's uniquifying suffix, is a layer the run saw."""
    names: dict[str, str] = {}
    for m in modules:
        names.setdefault(m.name, m.name)
        names.setdefault(m.name.rsplit("/", 1)[-1], m.name)
    comps = [c for c in op.split("/")[:-1] if c not in _WRAPPERS]
    for comp in reversed(comps):
        for candidate in (comp, _UNIQUIFIED.sub("", comp)):
            if candidate in names:
                return names[candidate]
    return None
