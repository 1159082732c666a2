"""Attention written out by hand (or nn.MultiheadAttention with its weights
returned) materialises seq x seq score and probability tensors per head;
`scaled_dot_product_attention` computes attention in blocks and keeps none.

Evidence: square [..., L, L] tensors (L >= 64) live at the peak, made by the
ops attention is built of. Estimate: their bytes.
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_SEQ = 64
SCORE_OPS = (
    "bmm",
    "matmul",
    "baddbmm",
    "softmax",
    "_softmax",
    "div",
    "mul",
    "masked_fill",
    "dropout",
    "native_dropout",
    "add",
    "where",
    "einsum",
    "BatchMatMulV2",
    "Softmax",
    "RealDiv",
    "Mul",
    "AddV2",
)
SOFTMAX_OPS = ("softmax", "_softmax", "Softmax", "log_softmax")

CODE = """\
import torch.nn.functional as F

# q, k, v: [batch, heads, seq, head_dim]. Replaces softmax(q @ k.transpose(-2, -1) / sqrt(d)) @ v
# without keeping the [seq, seq] scores (pass attn_mask= or is_causal=True for masks).
out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1 if model.training else 0.0)
# nn.MultiheadAttention uses it when called with need_weights=False."""


#: A Hugging Face model's own switch (the q, k, v template is not the user's code to edit).
HF_CODE = """\
# Hugging Face: attention through torch's scaled_dot_product_attention, no [seq, seq] scores kept
# (transformers without set_attn_implementation: build it with attn_implementation="sdpa")
{root}.set_attn_implementation("sdpa")"""


def score_tensors(f: Facts) -> list:
    found = []
    for t in f.peak.tensors if f.peak else []:
        shape, op = t.shape, f.op_kind(t.op)
        if len(shape) < 3 or shape[-1] != shape[-2] or shape[-1] < MIN_SEQ:
            continue
        if (len(shape) == 4 and op in SCORE_OPS) or op in SOFTMAX_OPS:
            found.append(t)
    return found


def check(f: Facts) -> Suggestion | None:
    if f.framework is None:
        return None
    scores = score_tensors(f)
    saving = sum(t.bytes for t in scores)
    if not scores or not f.worth_it(saving):
        return None
    largest = max(scores, key=lambda t: t.bytes)
    where = f" in {largest.layer}" if largest.layer else ""
    evidence = (
        f"{len(scores)} attention score tensor(s) of seq x seq are alive at the peak, {fmt_bytes(saving)} "
        f"in all: the largest is {'x'.join(map(str, largest.shape))} {largest.dtype} "
        f"({fmt_bytes(largest.bytes)}) from {largest.op}{where}"
    )
    root = f.root_of(largest.layer) if largest.layer else None
    code = (
        f.placed_after_build(root, HF_CODE.format(root=root))
        if f.framework == "torch" and root and f.library_of(root) == "transformers"
        else CODE
        if f.framework == "torch"
        else (
            "import keras\n\n# Keras 3: MultiHeadAttention uses a fused kernel where the backend has one\n"
            "attention = keras.layers.MultiHeadAttention(num_heads=8, key_dim=64, use_flash_attention=True)"
        )
    )
    return Suggestion(
        id="sdpa",
        title="Use fused attention (scaled_dot_product_attention)",
        evidence=evidence,
        code=code,
        estimated_saving_bytes=saving,
    )
