"""Gradient checkpointing: keep only each block's input for backward and
recompute the rest when backward reaches the block.

Blocks: going down from the model with the most activation memory into the
child that holds nearly all of it (model -> encoder -> layers; past a CNN's
stem into its trunk), the children there are the blocks (encoder.layers.0,
.1, ...). Checkpointing block b saves
its activations except its output, which the next block still keeps:
act(b) - out(b). Backward recomputes one block at a time, which adds the
largest block's saving back during backward.

PyTorch only: on Keras the blocks rebuilt under tf.recompute_grad saved
about twice what the profile's blocks claim, by TF's own counter (issue 29).
"""

from __future__ import annotations

from memprofile.analysis.rules import trainers
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import PHASES, Suggestion
from memprofile.units import fmt_bytes

MIN_ACTIVATION_SHARE = 0.2
#: A block below this share of the activation memory is not worth naming.
MIN_BLOCK_SHARE = 0.02
#: A layer whose subtree holds less of the activations is no candidate parent of blocks.
MIN_NODE_SHARE = 0.2
#: A block whose inner layers kept less than this share of what checkpointing
#: it would save kept only its input: it is checkpointed already.
RECOMPUTED = 0.1


def _tree(f: Facts) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Children of each layer (in the order they were registered: forward
    order for the usual model) and each layer's subtree activation bytes at the peak."""
    own = f.peak.activation_by_layer if f.peak else {}
    children: dict[str, list[str]] = {}
    for layer in f.profile.layers:
        if layer.parent is not None and layer.parent != layer.name:
            children.setdefault(layer.parent, []).append(layer.name)
    memo: dict[str, int] = {}

    def subtree(name: str) -> int:
        if name not in memo:
            memo[name] = own.get(name, 0) + sum(subtree(c) for c in children.get(name, []))
        return memo[name]

    for layer in f.profile.layers:
        subtree(layer.name)
    return children, memo


def _children_saves(
    f: Facts, node: str, children: dict[str, list[str]], subtree: dict[str, int], total: int
) -> list[tuple[str, int]]:
    """(child, bytes checkpointing it saves at the peak) in forward order:
    its activations but its output, which the next block keeps anyway."""
    found = []
    for kid in children.get(node, []):
        layer = f.layers[kid]
        output = layer.output_bytes
        saves = subtree.get(kid, 0) - output
        if f.framework == "torch" and children.get(kid) and _inner_activations(f, kid, children) < RECOMPUTED * saves:
            continue  # checkpointed already (in its forward, or by this rule's fix): nothing more to save
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
    # Blocks a loop ran (`encoder.<BertLayer>`) are one name for many: where
    # backward is among them is not known, and it recomputes one of many at
    # a time, so what they save shrinks with the activations as in forward.
    looped = any(_looped(n) for n, _ in chosen)
    previous = tl.live_bytes[0] if tl.live_bytes else 0
    for live, a, ph, lab in zip(tl.live_bytes, act, phase, layer):
        if ph != backward or looped:
            reached = len(saves)
            value = live - fraction * a
        else:
            # Only an allocation tells where backward is: a free is labeled by the op that made
            # the block (Lightning's zero_grad frees the last step's gradients after the forward,
            # in the parameters' order, each labeled by the backward op that made it).
            k = block_of_label[lab] if lab >= 0 and live > previous else None
            if k is not None:
                reached = min(reached, k)
            value = live - before[reached]
        previous = live
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
        if not _several(kids) or subtree.get(node, 0) < MIN_NODE_SHARE * total:
            continue
        found = _children_saves(f, node, children, subtree, total)
        if not _several(n for n, _ in found):
            continue  # one block: checkpointing it only moves its memory to backward
        saving = f.peak_bytes - peak_checkpointed(f, found)
        if saving > best[0]:
            best = (saving, found)
    return sorted(best[1], key=lambda kv: -kv[1])


def _inner_activations(f: Facts, block: str, children: dict[str, list[str]]) -> int:
    """Activation bytes the block's inner layers allocated in the run. A
    checkpointed block's inner layers keep nothing for backward (their
    forward outputs are temporaries, recomputed in backward); what the block
    keeps at the peak is then its input and its recomputation's."""
    inner, todo = 0, list(children.get(block, []))
    while todo:
        name = todo.pop()
        layer = f.layers.get(name)
        inner += layer.activation_bytes if layer else 0
        todo.extend(children.get(name, []))
    return inner


def _several(names) -> bool:
    """Two blocks or more: two names, or one that stands for every module of
    a type its parent ran from a loop (`encoder.<BertLayer>`: the capture
    names them by type when the parent does not own them itself)."""
    names = list(names)
    return len(names) >= 2 or any(_looped(n) for n in names)


def _looped(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("<")


def check(f: Facts) -> Suggestion | None:
    # Keras: the blocks rebuilt under tf.recompute_grad saved 19-21 MB by TF's
    # own counter where the profile's blocks claimed 9 MB (tests/fixes/
    # test_rule_failures_keras.py); what the traced fit keeps is not the
    # profile's per-layer activations, so no estimate here is within 10 %.
    if f.framework != "torch" or not f.trained:
        return None
    activation = f.at_peak("activation")
    if activation < MIN_ACTIVATION_SHARE * max(f.added_bytes, 1):
        return None
    chosen = blocks(f)
    if not _several(n for n, _ in chosen):
        return None  # one block: checkpointing it only moves its memory to backward
    saved = sum(s for _, s in chosen)
    order = {layer.name: i for i, layer in enumerate(f.profile.layers)}
    saving = f.peak_bytes - peak_checkpointed(f, sorted(chosen, key=lambda c: order[c[0]]))
    if not f.worth_it(saving):
        return None
    names = [n for n, _ in sorted(chosen)]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    title = f"Checkpoint {len(names)} blocks ({shown})"
    if any(_looped(n) for n in names):  # one name for every module of a type: how many is not known
        title = f"Checkpoint the blocks a loop runs ({shown})"
    evidence = (
        f"activations are {f.share(activation)} of the {fmt_bytes(f.peak_bytes)} peak "
        f"({fmt_bytes(activation)}); the blocks {shown} keep {fmt_bytes(saved)} of them for backward"
    )
    root = f.root_of(names[0])
    patch = _patch(root, [f.relative(n) for n in names])
    if patch is None:
        return None
    imports = "import functools\nfrom torch.utils.checkpoint import checkpoint\n\n"
    info = f.trainer
    if info is not None and info.framework == trainers.HF and f.library_of(root) == "transformers":
        # The Trainer's own switch: it calls model.gradient_checkpointing_enable() when it trains
        # (each of the model's blocks, the ones named here), and stops the key/value cache.
        if info.settings.get("gradient_checkpointing") == "True":
            return None
        what = (
            f"Hugging Face checkpoints each of {root}'s blocks ({shown}) with gradient_checkpointing=True: "
            "their inputs are kept, the rest is recomputed in backward"
        )
        changes = {"gradient_checkpointing": "True", "gradient_checkpointing_kwargs": '{"use_reentrant": False}'}
        return Suggestion(
            id="gradient_checkpointing",
            title=title + ": TrainingArguments(gradient_checkpointing=True)",
            evidence=evidence + trainers.replay_note(info),
            code=trainers.hf_code(f, info, changes, what),
            estimated_saving_bytes=saving,
        )
    if info is not None and info.framework == trainers.LIGHTNING:
        cls = trainers.module_class(info)
        blocks_text = ", ".join(_attribute(f.relative(n)) for n in names[:6]) + (" ..." if len(names) > 6 else "")
        lightning_head = (
            f"# Lightning: in {cls}.forward, run each block ({blocks_text}) through\n"
            "# torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False); the fit loop is unchanged.\n"
            f"# The same on this {cls} instance, until the class changes:\n"
        )
        return Suggestion(
            id="gradient_checkpointing",
            title=title,
            evidence=evidence + trainers.replay_note(info),
            code=lightning_head + imports + f.placed_after_build(root, patch),
            estimated_saving_bytes=saving,
        )
    if f.library_of(root) == "transformers":
        # its blocks' forward keeps a key/value cache: patched, the recomputed forward stores it
        # again and torch's checkpoint raises (a GPT-2: "Recomputed values ... different metadata")
        patch = _HF.format(root=root) + "\n".join(
            f"    {line}" if line else "" for line in (imports + patch).splitlines()
        )
        imports = ""
    code = imports + f.placed_after_build(root, patch)
    return Suggestion(
        id="gradient_checkpointing",
        title=title,
        evidence=evidence,
        code=code,
        estimated_saving_bytes=saving,
        can_try=True,
        try_change="checkpoint=" + ",".join(names),
    )


def _attribute(path: str) -> str:
    """A block's path as the module's code reaches it: blocks.0 -> self.blocks[0]."""
    out = "self"
    for part in path.split("."):
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


#: A Hugging Face model's own switch (it also stops the key/value cache while training).
_HF = """\
if getattr({root}, "supports_gradient_checkpointing", False):  # a Hugging Face model: its own switch
    {root}.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{"use_reentrant": False}})
else:
"""


_WRAP = "block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)"


def _patch(root: str, relative: list[str]) -> str | None:
    """Code that checkpoints the blocks at these paths inside `root`. A
    `<Type>` part is every module of that type its parent ran (from a loop:
    the profile has no path to each), found by a loop over the parent's
    modules. None for paths with more than one such part."""
    head = "# Keep only each block's input for backward; recompute the rest when backward reaches it.\n"
    if not any("<" in path for path in relative):
        return head + f"for name in {relative!r}:\n    block = {root}.get_submodule(name)\n    {_WRAP}"
    groups: dict[tuple[str, str], list[str]] = {}
    for path in relative:
        parts = path.split(".")
        typed = [i for i, part in enumerate(parts) if part.startswith("<")]
        if len(typed) != 1:
            return None
        i = typed[0]
        key = (".".join(parts[:i]), parts[i][1:-1])
        groups.setdefault(key, []).append(".".join(parts[i + 1 :]))
    lines = [head.rstrip("\n")]
    for (parent, kind), inner in groups.items():
        lines.append(
            f"for outer in [m for m in {root}.get_submodule({parent!r}).modules() if type(m).__name__ == {kind!r}]:"
        )
        if inner == [""]:
            lines += ["    block = outer", f"    {_WRAP}"]
        else:
            lines += [f"    for name in {inner!r}:", "        block = outer.get_submodule(name)", f"        {_WRAP}"]
    return "\n".join(lines)
