"""Gradient checkpointing: keep only each block's input for backward and
recompute the rest when backward reaches the block.

Blocks: going down from the model with the most activation memory into the
child that holds nearly all of it (model -> encoder -> layers; past a CNN's
stem into its trunk), the children there are the blocks (encoder.layers.0,
.1, ...). Checkpointing block b saves
its activations except its output, which the next block still keeps:
act(b) - out(b). Backward recomputes one block at a time, which adds the
largest block's saving back during backward.
"""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion
from memprofile.units import fmt_bytes

MIN_ACTIVATION_SHARE = 0.2
KERAS_CODE = """\
import keras
import tensorflow as tf


class Recompute(keras.layers.Layer):
    \"\"\"Runs a block without keeping its activations; backward recomputes them.\"\"\"

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        return tf.recompute_grad(self.block)(x)
"""
#: A block below this share of the activation memory is not worth naming.
MIN_BLOCK_SHARE = 0.02
DESCEND_SHARE = 0.8


def blocks(f: Facts) -> list[tuple[str, int]]:
    """(layer, bytes checkpointing it saves at the peak), largest first."""
    own = f.peak.activation_by_layer if f.peak else {}
    children: dict[str, list[str]] = {}
    for layer in f.profile.layers:
        if layer.parent is not None:
            children.setdefault(layer.parent, []).append(layer.name)
    memo: dict[str, int] = {}

    def subtree(name: str) -> int:
        if name not in memo:
            memo[name] = own.get(name, 0) + sum(subtree(c) for c in children.get(name, []))
        return memo[name]

    roots = [r for r in f.roots() if subtree(r) > 0]
    if not roots:
        return []
    node = max(roots, key=subtree)
    while True:
        kids = [c for c in children.get(node, []) if subtree(c) > 0]
        top = max(kids, key=subtree, default=None)
        if top is not None and subtree(top) >= DESCEND_SHARE * subtree(node):
            node = top  # a wrapper (or a stem beside the trunk): the blocks are further down
            continue
        break
    total = sum(own.values()) or 1
    found = []
    for kid in children.get(node, []):
        layer = f.layers[kid]
        output = layer.output_bytes
        if f.framework == "tensorflow":
            if not children.get(kid):
                continue  # one Keras layer: no way to tell its output from what it keeps
            # Keras layers' outputs are not recorded: the block's last layer's
            # activations stand for its output.
            output = own.get(_last_leaf(kid, children), 0)
        saves = subtree(kid) - output
        if saves >= MIN_BLOCK_SHARE * total:
            found.append((kid, saves))
    return sorted(found, key=lambda kv: -kv[1])


def _last_leaf(name: str, children: dict[str, list[str]]) -> str:
    while children.get(name):
        name = children[name][-1]
    return name


def check(f: Facts) -> Suggestion | None:
    if f.framework is None or not f.trained:
        return None
    activation = f.at_peak("activation")
    if activation < MIN_ACTIVATION_SHARE * max(f.added_bytes, 1):
        return None
    chosen = blocks(f)
    if len(chosen) < 2:
        return None  # one block: checkpointing it only moves its memory to backward
    saved = sum(s for _, s in chosen)
    fraction = min(1.0, saved / activation)
    saving = f.saving_without({"activation": fraction}, add_in_backward=max(s for _, s in chosen))
    if not f.worth_it(saving):
        return None
    names = [n for n, _ in sorted(chosen)]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    evidence = (f"activations are {f.share(activation)} of the {fmt_bytes(f.peak_bytes)} peak "
                f"({fmt_bytes(activation)}); the blocks {shown} keep {fmt_bytes(saved)} of them for backward")
    root = f.root_of(names[0])
    if f.framework == "tensorflow":
        # keras.RematScope fails inside model.fit on the TensorFlow backend
        # (custom_gradient with keyword arguments in graph mode; Keras 3.15),
        # and a layer's call cannot be swapped in place: the blocks are wrapped
        # when the model is built. Measured on a 4-block MLP: peak 284 -> 164 MiB.
        code = (KERAS_CODE + f"\n# when building {root}, wrap these blocks: "
                + ", ".join(n.rsplit("/", 1)[-1] for n in names) + "\n# h = Recompute(block)(h)   instead of   h = block(h)")
        return Suggestion(id="gradient_checkpointing", title=f"Checkpoint {len(names)} blocks ({shown})",
                          evidence=evidence, code=code, estimated_saving_bytes=saving)
    relative = [f.relative(n) for n in names]
    code = ("import functools\nfrom torch.utils.checkpoint import checkpoint\n\n"
            "# Keep only each block's input for backward; recompute the rest when backward reaches it.\n"
            f"for name in {relative!r}:\n    block = {root}.get_submodule(name)\n"
            "    block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)")
    return Suggestion(
        id="gradient_checkpointing", title=f"Checkpoint {len(names)} blocks ({shown})", evidence=evidence, code=code,
        estimated_saving_bytes=saving, can_try=True, try_change="checkpoint=" + ",".join(names),
    )
