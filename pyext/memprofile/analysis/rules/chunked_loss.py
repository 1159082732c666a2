"""Large logits and their loss: a language model's head makes a
[batch x sequence, vocabulary] tensor; cross-entropy then keeps a log-softmax
of the same size for backward, and backward makes two more (the gradient of
the log-softmax and of the logits). With an 8,000-word vocabulary these
four can be most of the peak, made by code outside any module (the loss is
usually computed in the cell), so the layer views cannot show them.

Fix: compute the head and the loss chunk by chunk, each chunk checkpointed,
so only one chunk's logits exist at a time (forward and backward), never
the whole [tokens, vocabulary] tensors; or fewer tokens per step (batch x
sequence), with gradient accumulation to keep the effective batch.

Estimate: the logit-sized tensors alive at the peak (same size as the
largest tensor the loss ops made) go; one chunk's working set (four
logit-sized tensors / CHUNKS) comes back; the peak cannot drop below the
highest point of the run where those tensors did not exist (the optimizer
step).
"""

from __future__ import annotations

import ast

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import PHASES, Suggestion
from memprofile.units import fmt_bytes

CHUNKS = 8
#: Logit-sized tensors must be this share of the peak for the rule to speak.
MIN_SHARE = 0.25
LOSS_OPS = frozenset(
    {
        "cross_entropy_loss",
        "cross_entropy",
        "log_softmax",
        "_log_softmax",
        "nll_loss",
        "nll_loss_nd",
        "nll_loss2d",
        "LogSoftmaxBackward0",
        "NllLossBackward0",
        "CrossEntropyLossBackward0",
        "_log_softmax_backward_data",
    }
)

HELPER = '''\
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def chunked_cross_entropy(hidden, head, target, chunks={chunks}):
    """cross_entropy(head(hidden), target) without keeping all the logits:
    each chunk's logits are made, used and recomputed in backward."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    target = target.reshape(-1)

    def chunk_loss(h, t):
        return F.cross_entropy(head(h), t, reduction="sum")

    total = sum(checkpoint(chunk_loss, h, t, use_reentrant=False)
                for h, t in zip(hidden.chunk(chunks), target.chunk(chunks)))
    return total / target.numel()
'''


def _logit_bytes(f: Facts) -> tuple[int, int, str | None]:
    """(bytes of logit-sized tensors alive at the peak, one such tensor's
    bytes, the layer that made the logits)."""
    tensors = f.peak.tensors if f.peak else []
    made_by_loss = [t for t in tensors if f.op_kind(t.op) in LOSS_OPS]
    if not made_by_loss:
        return 0, 0, None
    unit = max(t.bytes for t in made_by_loss)
    same = [t for t in tensors if t.bytes == unit]
    head = next((t.layer for t in same if t.layer and f.op_kind(t.op) in ("linear", "addmm", "matmul", "mm")), None)
    return sum(t.bytes for t in same), unit, head


def _base_name(expr: ast.AST) -> str | None:
    """`logits` of `logits.view(-1, V)`, `logits[:, :-1].flatten(0, 1)`."""
    while isinstance(expr, ast.Call | ast.Attribute | ast.Subscript):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _rewrite(f: Facts, head: str) -> str | None:
    """The cell with its cross_entropy call on the chunked helper, where the
    cell calls F.cross_entropy on the model's output; None otherwise."""
    cell = f.cell
    calls = [c.node for c in cell.calls if c.method == "cross_entropy" and c.node is not None and len(c.node.args) >= 2]
    if len(calls) != 1:
        return None
    call = calls[0]
    logits = _base_name(call.args[0])
    if logits is None or call.lineno != call.end_lineno:
        return None
    made = cell.assigned_call(logits)
    if made is None or not made.func or "." in made.func and made.method != "forward":
        return None  # the logits are not `logits = model(x)`: no safe rewrite
    model = made.func.rsplit(".", 1)[0] if made.method == "forward" else made.func
    root = f.root_of(head)
    if root != model and not head.startswith(model + "."):
        return None
    relative = f.relative(head)
    rewritten = cell.with_replaced([(call, f"chunked_cross_entropy({logits}, head, {ast.unparse(call.args[1])})")])
    if rewritten is None:  # not reached: the call is on one line (checked above)
        return None
    owner, _, attr = relative.rpartition(".")
    owner_expr = f"{model}.{owner}" if owner else model
    swap = (
        f"# {model}(x) returns the hidden states; the loss applies the head chunk by chunk\n"
        f"# (put the head back with setattr({owner_expr}, {attr!r}, head))\n"
        f"if not isinstance({model}.get_submodule({relative!r}), torch.nn.Identity):\n"
        f"    head = {model}.get_submodule({relative!r})\n"
        f"    setattr({owner_expr}, {attr!r}, torch.nn.Identity())\n"
    )
    return HELPER.format(chunks=CHUNKS) + "\n\n" + swap + "\n" + rewritten


def check(f: Facts) -> Suggestion | None:
    if f.framework != "torch" or not f.trained or f.peak is None:
        return None
    logit_bytes, unit, head = _logit_bytes(f)
    if not logit_bytes or logit_bytes < MIN_SHARE * f.peak_bytes:
        return None
    working_set = 4 * unit // CHUNKS
    floor = 0
    tl = f.timeline
    if tl is not None and tl.phase:
        optimizer = PHASES.index("optimizer")
        floor = max((live for live, ph in zip(tl.live_bytes, tl.phase) if ph == optimizer), default=0)
    new_peak = max(f.peak_bytes - logit_bytes + working_set, floor)
    saving = max(0, f.peak_bytes - new_peak)
    if not f.worth_it(saving):
        return None
    count = logit_bytes // unit
    where = ""
    lines = [s for s in f.profile.lines if any(f.op_kind(op) in LOSS_OPS for op in s.ops)]
    if lines:
        where = f" (the loss on line {lines[0].line}: {lines[0].text})"
    evidence = (
        f"{count} tensors the size of the logits ({fmt_bytes(unit)} each"
        f"{', made by ' + head if head else ''}) are alive at the {fmt_bytes(f.peak_bytes)} peak: "
        f"{fmt_bytes(logit_bytes)}, {f.share(logit_bytes)} of it: the logits, cross-entropy's log-softmax "
        f"and their gradients{where}"
    )
    code = _rewrite(f, head) if head else None
    if code is None:
        code = (
            HELPER.format(chunks=CHUNKS) + "\n# hidden = the model's output before its vocabulary head; "
            "head = that Linear layer:\n# loss = chunked_cross_entropy(hidden, head, targets)\n"
            "# or fewer tokens per step (batch x sequence) with gradient accumulation"
        )
    return Suggestion(
        id="chunked_loss",
        title="Compute the logits and the loss in chunks",
        evidence=evidence,
        code=code,
        estimated_saving_bytes=saving,
    )
