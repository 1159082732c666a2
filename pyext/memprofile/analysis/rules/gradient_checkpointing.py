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
from memprofile.model.profile import PHASES, Suggestion
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
#: A layer whose subtree holds less of the activations is no candidate parent of blocks.
MIN_NODE_SHARE = 0.2


def _tree(f: Facts) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Children of each layer (in the order they were registered: forward
    order for the usual model) and each layer's subtree activation bytes at the peak."""
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

    for layer in f.profile.layers:
        subtree(layer.name)
    return children, memo


def _children_saves(f: Facts, node: str, children: dict[str, list[str]], subtree: dict[str, int],
                    total: int) -> list[tuple[str, int]]:
    """(child, bytes checkpointing it saves at the peak) in forward order:
    its activations but its output, which the next block keeps anyway."""
    own = f.peak.activation_by_layer if f.peak else {}
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
        saves = subtree.get(kid, 0) - output
        if saves >= MIN_BLOCK_SHARE * total:
            found.append((kid, saves))
    return found


def peak_checkpointed(f: Facts, chosen: list[tuple[str, int]]) -> int:
    """The timeline's peak with the blocks checkpointed (`chosen`: (block,
    bytes it saves) in forward order). At a forward point the blocks' share
    of the activations is gone. In backward, each point's layer tells where
    backward is: before it reaches the blocks (the head, the loss) all of
    them are still checkpointed; in block k, block k is recomputed (its
    activations are back, freed as backward goes, as they would have been)
    and only the blocks before it stay gone."""
    tl = f.timeline
    act = tl.by_category.get("activation") if tl else None
    peak_act = f.at_peak("activation")
    if tl is None or not act or not peak_act or not chosen:
        return f.peak_bytes
    saves = [b for _, b in chosen]
    fraction = min(1.0, sum(saves) / peak_act)
    before = [0]
    for b in saves:
        before.append(before[-1] + b)  # before[k]: bytes the blocks ahead of block k save
    block_of_label = [_block_index(label, [n for n, _ in chosen]) for label in tl.labels]
    backward = PHASES.index("backward")
    phase = tl.phase or [-1] * len(act)
    layer = tl.layer or [-1] * len(act)
    best = 0.0
    reached = len(saves)  # the last block backward reached in this step (len: none yet)
    for live, a, ph, lab in zip(tl.live_bytes, act, phase, layer):
        if ph != backward:
            reached = len(saves)
            value = live - fraction * a
        else:
            k = block_of_label[lab] if lab >= 0 else None
            if k is not None:
                reached = min(reached, k)
            value = live - before[reached]
        best = max(best, value)
    return min(f.peak_bytes, int(best))


def _block_index(label: str, names: list[str]) -> int | None:
    for k, name in enumerate(names):
        if label == name or label.startswith((name + ".", name + "/")):
            return k
    return None


def blocks(f: Facts) -> list[tuple[str, int]]:
    """(layer, bytes checkpointing it saves at the peak) of the best set of
    sibling blocks, largest first. Candidates: the children of every layer
    with two or more children that hold a real share of the activations (the
    blocks of a ModuleList, a CNN's stages, an encoder's and decoder's);
    the set whose checkpointing lowers the estimated peak the most wins."""
    children, subtree = _tree(f)
    total = sum((f.peak.activation_by_layer if f.peak else {}).values()) or 1
    best: tuple[int, list[tuple[str, int]]] = (0, [])
    for node, kids in children.items():
        if len(kids) < 2 or subtree.get(node, 0) < MIN_NODE_SHARE * total:
            continue
        found = _children_saves(f, node, children, subtree, total)
        if len(found) < 2:
            continue  # one block: checkpointing it only moves its memory to backward
        saving = f.peak_bytes - peak_checkpointed(f, found)
        if saving > best[0]:
            best = (saving, found)
    return sorted(best[1], key=lambda kv: -kv[1])


def _last_leaf(name: str, children: dict[str, list[str]]) -> str:
    while children.get(name):
        name = children[name][-1]
    return name


def _placed(f: Facts, root: str, patch: str) -> str:
    """The patch alone (run it once, below), or, when the cell builds the
    model itself, the cell with the patch right after the model is built
    (a patch run after the cell would be lost when the cell builds a new one)."""
    line = f.cell.bound.get(root)
    tree = f.cell.tree
    if line is None or tree is None:
        return patch
    stmt = next((s for s in tree.body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
    if stmt is None or stmt.lineno != line or stmt.col_offset:
        return patch  # bound inside a loop or a block: no safe place to put it
    lines = f.cell.source.splitlines()
    end = stmt.end_lineno or stmt.lineno
    return "\n".join([*lines[:end], patch, *lines[end:]])


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
    order = {layer.name: i for i, layer in enumerate(f.profile.layers)}
    saving = f.peak_bytes - peak_checkpointed(f, sorted(chosen, key=lambda c: order[c[0]]))
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
                + ", ".join(n.rsplit("/", 1)[-1] for n in names)
                + "\n# h = Recompute(block)(h)   instead of   h = block(h)")
        return Suggestion(id="gradient_checkpointing", title=f"Checkpoint {len(names)} blocks ({shown})",
                          evidence=evidence, code=code, estimated_saving_bytes=saving)
    relative = [f.relative(n) for n in names]
    patch = ("# Keep only each block's input for backward; recompute the rest when backward reaches it.\n"
             f"for name in {relative!r}:\n    block = {root}.get_submodule(name)\n"
             "    block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)")
    code = "import functools\nfrom torch.utils.checkpoint import checkpoint\n\n" + _placed(f, root, patch)
    return Suggestion(
        id="gradient_checkpointing", title=f"Checkpoint {len(names)} blocks ({shown})", evidence=evidence, code=code,
        estimated_saving_bytes=saving, can_try=True, try_change="checkpoint=" + ",".join(names),
    )
