"""Advice in a framework trainer's own terms: where the profiled run's steps
were a Hugging Face `Trainer`'s or a Lightning `Trainer`'s (capture/trainers.py),
the rules' code is that trainer's switch, not an edit of a loop the user never
wrote. Each writer returns the code to insert, in one of these shapes:

- the cell builds the settings (`TrainingArguments(...)`, `L.Trainer(...)`):
  the cell with the keywords set in that call (its other lines as they are);
- Hugging Face, the cell builds the Trainer from an arguments variable made
  elsewhere: that variable rebound with `dataclasses.replace` (run once, then
  the training cell);
- Hugging Face, the cell only calls `trainer.train()`: the trainer built again
  from its own parts with the new arguments. Rebuilt, not `trainer.args.x = ...`:
  the Trainer reads mixed precision (its accelerator), the batch size and the
  optimizer when it is built or first trains, so a changed field would not
  take effect (transformers 4.57: `create_accelerator_and_postprocess` and
  `_train_batch_size` in `__init__`; the optimizer is kept once made);
- no variable to name (the trainer is a local of a function): where the
  settings go, as a comment.

Estimates: the what-if engine does not re-run a trainer's cell on fake tensors
(running it again would change the trainer), so the rules' replay of the
equivalent change on the recorded run stands, and the evidence says so.
"""

from __future__ import annotations

import ast

from memprofile.analysis.cell import dotted
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import TrainerInfo

HF = "transformers"
LIGHTNING = "lightning"
#: Said in the evidence of advice for a trainer's cell.
REPLAY_NOTE = (
    " (The estimate is the recorded run's replay of the equivalent change: the what-if engine does not "
    "re-run a {kind}'s cell on fake tensors, which would train it again.)"
)


def replay_note(info: TrainerInfo) -> str:
    return REPLAY_NOTE.format(kind="Hugging Face Trainer" if info.framework == HF else "Lightning Trainer")


def framework_name(info: TrainerInfo) -> str:
    return "Hugging Face" if info.framework == HF else "Lightning"


# -- editing a call in the cell ------------------------------------------------
def _offsets(source: str) -> list[int]:
    """Byte offset of each line's start in the UTF-8 source (ast columns are bytes)."""
    starts, total = [], 0
    for line in source.encode().split(b"\n"):
        starts.append(total)
        total += len(line) + 1
    return starts


def edit_call(source: str, call: ast.Call, changes: dict[str, str]) -> str:
    """`source` with `call`'s keywords set to `changes` (name -> source text): an
    existing keyword's value replaced, a new one added after the last argument;
    the call's layout (lines, comments) is kept."""
    raw = source.encode()
    starts = _offsets(source)

    def at(line: int, col: int) -> int:
        return starts[line - 1] + col

    edits: list[tuple[int, int, str]] = []
    present = {kw.arg: kw for kw in call.keywords if kw.arg is not None}
    added = []
    for name, value in changes.items():
        kw = present.get(name)
        if kw is not None:
            v = kw.value
            edits.append((at(v.lineno, v.col_offset), at(v.end_lineno or v.lineno, v.end_col_offset or 0), value))
        else:
            added.append(f"{name}={value}")
    if added:
        parts: list[ast.expr | ast.keyword] = [*call.args, *call.keywords]
        if parts:
            last = max(parts, key=lambda n: (n.end_lineno or 0, n.end_col_offset or 0))
            pos = at(last.end_lineno or last.lineno, last.end_col_offset or 0)
            edits.append((pos, pos, ", " + ", ".join(added)))
        else:
            pos = at(call.end_lineno or call.lineno, (call.end_col_offset or 1) - 1)  # before its ")"
            edits.append((pos, pos, ", ".join(added)))
    for start, end, text in sorted(edits, reverse=True):
        raw = raw[:start] + text.encode() + raw[end:]
    return raw.decode()


def insert_before(f: Facts, call: ast.Call, line: str) -> str:
    """The cell with `line` (and `import dataclasses` first) before the statement
    holding `call`, at that statement's indentation."""
    tree = f.cell.tree
    assert tree is not None  # calls_of found the call in it
    holding = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.stmt) and node.lineno <= call.lineno <= (node.end_lineno or node.lineno)
    ]
    at = max(holding, key=lambda n: n.lineno).lineno if holding else call.lineno
    lines = f.cell.source.splitlines(keepends=True)
    indent = lines[at - 1][: len(lines[at - 1]) - len(lines[at - 1].lstrip())]
    lines.insert(at - 1, f"{indent}{line}\n")
    return "import dataclasses\n\n" + "".join(lines)


def calls_of(f: Facts, class_name: str) -> list[ast.Call]:
    """The cell's calls of a class by its name (`TrainingArguments(...)`, `L.Trainer(...)`)."""
    if not class_name:
        return []
    return [c.node for c in f.cell.calls if c.node is not None and dotted(c.node.func).rsplit(".", 1)[-1] == class_name]


def _keywords(changes: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in changes.items())


# -- Hugging Face --------------------------------------------------------------
def hf_code(f: Facts, info: TrainerInfo, changes: dict[str, str], what: str) -> str:
    """The TrainingArguments change `changes` (name -> source text) as code the
    user runs: see the module's docstring for its shapes. `what`: one comment line."""
    head = f"# {what}\n"
    kw = _keywords(changes)
    args_type = info.args_type or "TrainingArguments"
    built = calls_of(f, args_type)
    if len(built) == 1:
        return head + f"# The cell with {kw} in its {args_type}:\n" + edit_call(f.cell.source, built[0], changes)
    trainer_calls = calls_of(f, info.type)
    if trainer_calls and info.args_variable and info.args_variable in f.cell.bound:
        # The cell binds the variable itself (`args = base_args`, `args = make_args()`): a rebinding
        # run before it would be overwritten, so the cell gets it just before it builds the trainer.
        var = info.args_variable
        return (
            head
            + f"# The cell with {var} changed just before it builds the {info.type}:\n"
            + insert_before(f, trainer_calls[0], f"{var} = dataclasses.replace({var}, {kw})")
        )
    if trainer_calls and info.args_variable:
        return (
            head
            + f"# Run once, then the training cell (it builds the {info.type} from {info.args_variable}):\n"
            + f"import dataclasses\n\n{info.args_variable} = dataclasses.replace({info.args_variable}, {kw})"
        )
    if info.variable:
        t = info.variable
        return (
            head + f"# The {info.type} reads these when it is built: build it again from its own parts with them,\n"
            "# then run the training cell again (the model and the data are the same objects).\n"
            "import dataclasses\n\n"
            f"{t} = type({t})(\n"
            f"    model={t}.model,\n"
            f"    args=dataclasses.replace({t}.args, {kw}),\n"
            f"    data_collator={t}.data_collator,\n"
            f"    train_dataset={t}.train_dataset,\n"
            f"    eval_dataset={t}.eval_dataset,\n"
            f"    processing_class={t}.processing_class,  # transformers < 4.46: tokenizer={t}.tokenizer\n"
            f"    compute_loss_func={t}.compute_loss_func,\n"
            f"    compute_metrics={t}.compute_metrics,\n"
            f"    preprocess_logits_for_metrics={t}.preprocess_logits_for_metrics,\n"
            f"    optimizer_cls_and_kwargs={t}.optimizer_cls_and_kwargs,\n"
            "    # your own callbacks (the Trainer adds its defaults again)\n"
            f"    callbacks=[c for c in {t}.callback_handler.callbacks"
            ' if not type(c).__module__.startswith("transformers.")],\n'
            "    # and optimizers=(...) or model_init=... again if you passed them\n"
            ")"
        )
    return head + f"# Where your code builds the {info.type}'s arguments:\n# {args_type}(..., {kw})"


# -- Lightning -----------------------------------------------------------------
def _lightning_prefix(info: TrainerInfo) -> str:
    return "pl" if info.package == "pytorch_lightning" else "L"


def lightning_code(
    f: Facts, info: TrainerInfo, changes: dict[str, str], what: str, loader_batch: int | None = None
) -> str:
    """The Lightning Trainer built with `changes`: the cell's own `Trainer(...)`
    call edited (and its DataLoader's batch_size where `loader_batch` is given),
    else where the arguments go. Lightning reads precision and
    accumulate_grad_batches when the Trainer is built."""
    head = f"# {what}\n"
    kw = _keywords(changes)
    built = calls_of(f, info.type)
    loader_note = f"# and give its train DataLoader batch_size={loader_batch}\n" if loader_batch is not None else ""
    if len(built) == 1:
        source = f.cell.source
        changed = edit_call(source, built[0], changes)
        if loader_batch is not None:
            loaders = [
                c
                for c in _calls_in(changed, "DataLoader")
                if any(k.arg == "batch_size" for k in c.keywords) or len(c.args) >= 2
            ]
            if len(loaders) == 1:
                changed = _set_loader_batch(changed, loaders[0], loader_batch)
                loader_note = ""
        return head + f"# The cell with {kw} in its Trainer:\n" + loader_note + changed
    pkg = _lightning_prefix(info)
    module = "lightning" if pkg == "L" else "pytorch_lightning"
    return (
        head + "# Lightning reads these when the Trainer is built: build yours with them (your other arguments "
        "as they are)\n" + loader_note + f"import {module} as {pkg}\n\n"
        f"{info.variable or 'trainer'} = {pkg}.Trainer(..., {kw})"
    )


def _calls_in(source: str, name: str) -> list[ast.Call]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and dotted(n.func).rsplit(".", 1)[-1] == name]


def _set_loader_batch(source: str, call: ast.Call, batch: int) -> str:
    if any(k.arg == "batch_size" for k in call.keywords):
        return edit_call(source, call, {"batch_size": str(batch)})
    positional = call.args[1]  # DataLoader(dataset, batch_size, ...)
    starts = _offsets(source)
    raw = source.encode()
    a = starts[positional.lineno - 1] + positional.col_offset
    b = starts[(positional.end_lineno or positional.lineno) - 1] + (positional.end_col_offset or 0)
    return (raw[:a] + str(batch).encode() + raw[b:]).decode()


def module_class(info: TrainerInfo, default: str = "your LightningModule") -> str:
    return info.model_type or default
