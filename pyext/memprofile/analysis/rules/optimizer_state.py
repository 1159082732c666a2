"""Optimizer state and the optimizer step.

A demanding engineer first removes what costs nothing in training: where the
peak is inside `optimizer.step()`, it is made by the update's temporaries
(torch's single-tensor Adam, the CPU's default, makes a sqrt and a quotient
the size of each parameter; foreach, CUDA's default, all of them at once).
On the CPU the fused kernel (`fused=True`: Adam, AdamW, SGD, Adagrad)
updates in place and makes none. On a GPU the advice is `foreach=False`:
the temporaries of one parameter at a time (fused wants its step counters on
the device; an optimizer that has stepped keeps them on the CPU). Same
update, same training. The GPU branch has not run on a GPU.
Measured on the quickstart's `train` cell: 32 MiB of temporaries at
`aten::div`, fused saves 28.0 MiB (the peak moves to the backward).
Estimate: the timeline's peak less the step's temporaries (all of them with
fused; beyond two of the largest parameter with foreach=False), so the peak
may move to the backward.

Only then, and named as a change to training, the state itself: SGD with
momentum keeps one moment instead of Adam's two, Adafactor (torch >= 2.5)
factored second moments, bitsandbytes 8-bit moments (CUDA only). Where the
peak is outside the step, that is the only advice, and its estimate is for
SGD with momentum, the line the code shows first: half the stepped
optimizers' state taken off the timeline, and in the step SGD's temporaries
(its parameters' size) in place of Adam's (measured on a GRU with AdamW:
30.5 MB saved where halving the state alone gives 18.9 MB).

Only the optimizers the run stepped count: a notebook may hold another
model's optimizer (and its state) that this cell never touched. The code
uses the cell's own names: where the cell creates the optimizer, that line
is rewritten; otherwise the flag is set on the existing optimizer's groups
(its state is kept) or a new optimizer is bound to the same variable.

Keras: quiet (`_check_keras` says why, with the measurements).
"""

from __future__ import annotations

import ast
import copy

from memprofile.analysis.rules import trainers
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import PHASES, OptimizerStat, Suggestion
from memprofile.units import fmt_bytes

#: A change of optimizer must save this share of the peak (less other models'
#: memory, which no change to this cell frees): it changes training, worth it
#: only for a real part of the memory.
MIN_SHARE = 0.1
#: Bytes of state per byte of parameters above which an optimizer keeps two moments.
TWO_MOMENTS = 1.5
#: Optimizers with a fused (in-place, one kernel) step on the CPU (torch 2.13).
FUSED_CPU = frozenset({"Adam", "AdamW", "SGD", "Adagrad"})
#: Single-tensor Adam's largest moment of the step: a sqrt and a quotient of one parameter.
SINGLE_TENSOR_TEMPORARIES = 2


# -- torch: the step's temporaries first -----------------------------------------
def _peak_point(f: Facts) -> tuple[str, str]:
    """The training phase and the op at the timeline's highest point ("": unknown)."""
    tl = f.timeline
    if tl is None or not tl.live_bytes:
        return "", ""
    k = max(range(len(tl.live_bytes)), key=tl.live_bytes.__getitem__)
    phase = PHASES[tl.phase[k]] if tl.phase and 0 <= tl.phase[k] < len(PHASES) else ""
    op = tl.labels[tl.op[k]] if tl.op and tl.op[k] >= 0 else ""
    return phase, op


def _largest_parameter(f: Facts) -> int:
    tensors = [t.bytes for t in (f.peak.tensors if f.peak else []) if t.category == "parameter"]
    return max(tensors, default=0)


def _step_flag(f: Facts, opts: list[OptimizerStat]) -> tuple[str, int] | None:
    """The flag that removes the step's temporaries for every stepped
    optimizer, and the temporaries that stay with it (bytes); None when
    the step already makes none or no flag applies."""
    if not f.on_gpu and all(o.type in FUSED_CPU for o in opts):
        return "fused", 0
    if f.on_gpu:
        # foreach is CUDA's default; the fused kernel wants its step counters on the
        # device, which an optimizer that has stepped keeps on the CPU: foreach=False
        return "foreach", SINGLE_TENSOR_TEMPORARIES * _largest_parameter(f)
    return None  # single-tensor on the CPU already, and no fused kernel


def _with_flag(node: ast.Call, flag: str) -> str:
    """The optimizer's constructor call with its own fused/foreach keywords replaced by the flag."""
    call = copy.deepcopy(node)
    call.keywords = [k for k in call.keywords if k.arg not in ("fused", "foreach")]
    call.keywords.append(ast.keyword(flag, ast.Constant(flag == "fused")))
    return ast.unparse(call)


def _flag_code(f: Facts, opts: list[OptimizerStat], flag: str) -> str:
    """The cell with `fused=True` (or `foreach=False`) where it creates the
    optimizer, else the flag set on the existing optimizers' groups."""
    setting = "fused=True" if flag == "fused" else "foreach=False"
    what = (
        "in one fused kernel that updates in place: the step makes no temporaries"
        if flag == "fused"
        else "one parameter at a time: the step's temporaries are one parameter's, not all of them"
    )
    head = f"import torch\n\n# The update {what}.\n# The same update (what is learned does not change)"
    calls = [f.cell.assigned_call(o.name) if o.name.isidentifier() else None for o in opts]
    made = [c.node for c in calls if c is not None and c.node is not None]
    if len(made) == len(opts):
        edits = [(node, _with_flag(node, flag)) for node in made]
        rewritten = f.cell.with_replaced(edits)
        if rewritten is not None:
            return f"{head}: the cell with {setting}.\n" + _options_comment(f, opts[0]) + rewritten
    body = (
        '    group["fused"], group["foreach"] = True, False\n' if flag == "fused" else '    group["foreach"] = False\n'
    )
    groups = "".join(f"for group in {o.name}.param_groups:\n{body}" for o in opts)
    return (
        f"{head}; its state is kept. Run once, before the training cell\n"
        f"# (or create it with torch.optim.{opts[0].type}(..., {setting})):\n{groups}" + _options_comment(f, opts[0])
    )


def _params(f: Facts, opt: OptimizerStat) -> tuple[str, str]:
    """The parameters and learning rate as the cell wrote them, or a stand-in."""
    made = f.cell.assigned_call(opt.name) if opt.name.isidentifier() else None
    if made is not None and made.node is not None and made.node.args:
        args = made.node.args
        lr = ast.unparse(args[1]) if len(args) > 1 else made.keywords.get("lr", "1e-2")
        return ast.unparse(args[0]), str(lr)
    params = f"{opt.models[0]}.parameters()" if len(opt.models) == 1 else "...  # the same parameters"
    return params, "1e-2"


def _options_comment(f: Facts, opt: OptimizerStat) -> str:
    """Ways to shrink the state itself: each changes what is learned."""
    params, lr = _params(f, opt)
    return (
        f"#\n# If the state itself must shrink, each of these CHANGES TRAINING (another update rule):\n"
        f"#   {opt.name} = torch.optim.SGD({params}, lr={lr}, momentum=0.9)  # one moment, not two\n"
        f"#   {opt.name} = torch.optim.Adafactor({params}, lr={lr})  # factored second moments (torch >= 2.5)\n"
        f"#   {opt.name} = bitsandbytes.optim.{opt.type}8bit({params}, lr={lr})  # 8-bit moments, CUDA only\n"
    )


def _step_suggestion(f: Facts) -> Suggestion | None:
    """fused=True / foreach=False where the peak is the step's temporaries."""
    opts = f.stepped_optimizers
    phase, op = _peak_point(f)
    if not opts or phase != "optimizer":
        return None
    if f.trainer is not None and f.trainer.framework == trainers.HF:
        return _hf_fused(f, opts, op)
    found = _step_flag(f, opts)
    if found is None:
        return None
    flag, kept = found
    temporaries = f.at_peak("temporary")
    saving = max(0, f.saving_without({"temporary": 1.0}, in_phases={"optimizer"}) - kept)
    if not f.worth_it(saving):
        return None
    opt = max(opts, key=lambda o: o.parameter_bytes)
    names = ", ".join(f"{o.name} ({o.type})" for o in opts)
    setting = "fused=True" if flag == "fused" else "foreach=False"
    state = (
        f" ({fmt_bytes(opt.state_bytes)} of state = {opt.state_bytes / opt.parameter_bytes:.1f}x the "
        f"{fmt_bytes(opt.parameter_bytes)} of parameters it keeps stay)"
        if opt.parameter_bytes
        else ""
    )
    evidence = (
        f"the {fmt_bytes(f.peak_bytes)} peak is inside {names}.step(): its update holds "
        f"{fmt_bytes(temporaries)} of temporaries there ({op or 'the update'}); with {setting} the peak would fall by "
        f"about {fmt_bytes(saving)} (it moves out of the step); the update is the same{state}"
    )
    info = f.trainer
    code = _lightning_flag_code(f, info, opt, flag) if info is not None else _flag_code(f, opts, flag)
    return Suggestion(
        id="optimizer_state",
        title=f"Update {opt.name} without temporaries ({setting}): same training",
        evidence=evidence + (trainers.replay_note(info) if info is not None else ""),
        code=code,
        estimated_saving_bytes=saving,
    )


# -- torch: the state, as a change to training ----------------------------------
def _sgd_code(f: Facts, opt: OptimizerStat) -> str:
    """The cell with its optimizer line rewritten, or a line that rebinds the optimizer."""
    params, lr = _params(f, opt)
    made = f.cell.assigned_call(opt.name) if opt.name.isidentifier() else None
    head = (
        "import torch\n\n"
        f"# A CHANGE TO TRAINING: SGD with momentum learns differently from {opt.type}; check the loss curve.\n"
        f"# One moment per parameter instead of two (the estimate is for this change). Other options:\n"
        f"#   {opt.name} = torch.optim.Adafactor({params}, lr={lr})  # factored second moments (torch >= 2.5)\n"
        f"#   {opt.name} = bitsandbytes.optim.{opt.type}8bit({params}, lr={lr})  # 8-bit moments, CUDA only\n"
    )
    sgd = f"torch.optim.SGD({params}, lr={lr}, momentum=0.9)"
    if made is not None and made.node is not None and made.node.args:
        rewritten = f.cell.with_replaced([(made.node, sgd)])
        if rewritten is not None:  # one line: rewritten in place
            return head + "# The cell with SGD+momentum:\n" + rewritten
    return head + f"# (run before the training cell)\n{opt.name} = {sgd}"


def _peak_with_sgd(f: Facts, fraction: float, parameter_bytes: int) -> int:
    """The timeline's peak with `fraction` of the optimizer state gone and, in
    the optimizer step, temporaries no larger than SGD's (its parameters' size,
    or the bound given: Adafactor's)."""
    tl = f.timeline
    if tl is None or not tl.live_bytes:
        return f.peak_bytes
    state = tl.by_category.get("optimizer_state") or [0] * len(tl.live_bytes)
    temp = tl.by_category.get("temporary") or [0] * len(tl.live_bytes)
    phase = tl.phase or [-1] * len(tl.live_bytes)
    step = PHASES.index("optimizer")
    best = 0.0
    for live, s, t, ph in zip(tl.live_bytes, state, temp, phase):
        value = live - s * fraction - (max(0, t - parameter_bytes) if ph == step else 0)
        best = max(best, value)
    return min(f.peak_bytes, int(best))


def _state_suggestion(f: Facts) -> Suggestion | None:
    heavy = [o for o in f.stepped_optimizers if o.parameter_bytes and o.state_bytes >= TWO_MOMENTS * o.parameter_bytes]
    if not heavy:
        return None  # nothing stepped here, or it already keeps one moment or none
    state = sum(o.state_bytes for o in heavy)
    at_peak = f.at_peak("optimizer_state")
    if not at_peak:
        return None
    fraction = 0.5 * min(1.0, state / at_peak)
    saving = max(0, f.peak_bytes - _peak_with_sgd(f, fraction, sum(o.parameter_bytes for o in heavy)))
    if not f.worth_it(saving) or saving < MIN_SHARE * (f.peak_bytes - f.other_models_at_peak):
        return None
    opt = max(heavy, key=lambda o: o.state_bytes)
    if f.trainer is not None and f.trainer.framework == trainers.HF:
        return _hf_adafactor(f, heavy, opt, state, at_peak)
    models = ", ".join(opt.models) or "its parameters"
    evidence = (
        f"{opt.name} ({opt.type}) keeps {fmt_bytes(opt.state_bytes)} of state = "
        f"{opt.state_bytes / opt.parameter_bytes:.1f}x the {fmt_bytes(opt.parameter_bytes)} of parameters "
        f"of {models} it steps, {f.share(min(state, at_peak))} of the {fmt_bytes(f.peak_bytes)} peak "
        f"(two moments per parameter; SGD with momentum keeps one, Adafactor "
        f"factors the second, 8-bit states quarter them): each changes training"
    )
    info = f.trainer
    return Suggestion(
        id="optimizer_state",
        title=f"Shrink {opt.name}'s state: a change to training (SGD with momentum, Adafactor, 8-bit)",
        evidence=evidence + (trainers.replay_note(info) if info is not None else ""),
        code=_lightning_sgd_code(f, info, opt) if info is not None else _sgd_code(f, opt),
        estimated_saving_bytes=saving,
    )


# -- framework trainers -------------------------------------------------------
#: Hugging Face's Adafactor step (transformers.optimization.Adafactor, factored): the squared
#: gradient, its factored estimate and the update, each the size of one parameter, one
#: parameter at a time.
ADAFACTOR_TEMPORARIES = 3


def _hf_fused(f: Facts, opts: list[OptimizerStat], op: str) -> Suggestion | None:
    """Hugging Face: optim="adamw_torch_fused" where the peak is AdamW's step temporaries.
    The Trainer makes a new optimizer when it is built again, so the fused kernel's step
    counters start on the device (on CUDA too)."""
    info = f.trainer
    assert info is not None
    current = info.settings.get("optim", "")
    if "fused" in current or not all(o.type in ("AdamW", "Adam") for o in opts):
        return None
    saving = f.saving_without({"temporary": 1.0}, in_phases={"optimizer"})
    if not f.worth_it(saving):
        return None
    what = (
        'Hugging Face: optim="adamw_torch_fused" updates each parameter in place in one kernel: the same '
        "AdamW update, without the step's temporaries"
    )
    evidence = (
        f"the {fmt_bytes(f.peak_bytes)} peak is inside the {info.type}'s AdamW step (optim={current!r}): its update "
        f"holds {fmt_bytes(f.at_peak('temporary'))} of temporaries there ({op or 'the update'}); fused, the peak "
        f"would fall by about {fmt_bytes(saving)}; the update is the same"
    )
    return Suggestion(
        id="optimizer_state",
        title='Update without temporaries: TrainingArguments(optim="adamw_torch_fused"), same training',
        evidence=evidence + trainers.replay_note(info),
        code=trainers.hf_code(f, info, {"optim": '"adamw_torch_fused"'}, what),
        estimated_saving_bytes=saving,
    )


def _one_dimensional_bytes(f: Facts, opt: OptimizerStat) -> int:
    """Parameters of the optimizer's models in norm layers (1-D: Adafactor keeps their
    second moment whole); biases are not told apart and count as factored."""
    return sum(
        layer.parameter_bytes
        for layer in f.profile.layers
        if "Norm" in layer.type and (not opt.models or f.root_of(layer.name) in opt.models)
    )


def _hf_adafactor(
    f: Facts, heavy: list[OptimizerStat], opt: OptimizerStat, state: int, at_peak: int
) -> Suggestion | None:
    """Hugging Face: optim="adafactor" (no first moment, factored second moments). Estimate:
    the state less the whole second moments of 1-D parameters, and in the step Adafactor's
    temporaries (ADAFACTOR_TEMPORARIES of the largest parameter) in place of AdamW's."""
    info = f.trainer
    assert info is not None
    if info.settings.get("optim", "").startswith(("adafactor", "sgd", "adamw_8bit", "adamw_bnb")):
        return None
    params = sum(o.parameter_bytes for o in heavy)
    kept = min(state, _one_dimensional_bytes(f, opt))
    fraction = min(1.0, (state - kept) / at_peak)
    largest = _largest_parameter(f) or max((layer.parameter_bytes for layer in f.profile.layers), default=0)
    saving = max(0, f.peak_bytes - _peak_with_sgd(f, fraction, min(params, ADAFACTOR_TEMPORARIES * largest)))
    if not f.worth_it(saving) or saving < MIN_SHARE * (f.peak_bytes - f.other_models_at_peak):
        return None
    what = (
        'A CHANGE TO TRAINING: optim="adafactor" keeps no first moment and factored second moments '
        "(check the loss curve)."
    )
    if f.on_gpu:
        what += '\n# On CUDA with bitsandbytes installed, optim="adamw_8bit" keeps AdamW with 8-bit moments instead.'
    evidence = (
        f"the {info.type}'s {opt.type} keeps {fmt_bytes(opt.state_bytes)} of state = "
        f"{opt.state_bytes / opt.parameter_bytes:.1f}x the {fmt_bytes(opt.parameter_bytes)} of parameters it steps, "
        f"{f.share(min(state, at_peak))} of the {fmt_bytes(f.peak_bytes)} peak; Adafactor keeps about "
        f"{fmt_bytes(kept)} (the norm layers' second moments) and its step makes temporaries of one parameter "
        "at a time: a change to training"
    )
    return Suggestion(
        id="optimizer_state",
        title='Shrink the optimizer\'s state: TrainingArguments(optim="adafactor"), a change to training',
        evidence=evidence + trainers.replay_note(info),
        code=trainers.hf_code(f, info, {"optim": '"adafactor"'}, what),
        estimated_saving_bytes=saving,
    )


def _lightning_override(
    f: Facts, info: trainers.TrainerInfo, body: list[str], comment: str, replaces: bool = False
) -> str:
    """Code that wraps the LightningModule instance's configure_optimizers (Lightning calls it
    at each fit): `body` changes the optimizer it returns (`opt`) in place, or with `replaces`
    binds a new one, which goes back where the old one was (configure_optimizers may return an
    optimizer, a dict with "optimizer", a list of them, or ([optimizers], [schedulers]))."""
    cls = trainers.module_class(info)
    model = info.model_variable or "model"
    swap = [
        "# a scheduler built on the old optimizer still steps it: build yours on opt",
        'if isinstance(out, dict):\n        return {**out, "optimizer": opt}',
        "if isinstance(out, (list, tuple)) and out and isinstance(out[0], (list, tuple)):\n"
        "        return ([opt], *out[1:])",
        "return [opt] if isinstance(out, (list, tuple)) else opt",
    ]
    patch = "\n".join(
        [
            f"_configure = {model}.configure_optimizers",
            "",
            "",
            "def configure_optimizers():",
            '    out = _configure()  # an optimizer, {"optimizer": ...}, a list, or ([optimizers], [schedulers])',
            "    listed = isinstance(out, (list, tuple))",
            '    first = out["optimizer"] if isinstance(out, dict) else out[0] if listed else out',
            "    opt = first[0] if isinstance(first, (list, tuple)) else first",
            *("    " + line for line in body),
            *("    " + line for line in (swap if replaces else ["return out"])),
            "",
            "",
            f"{model}.configure_optimizers = configure_optimizers",
        ]
    )
    head = (
        f"import torch\n\n# {comment}\n# Lightning builds the optimizer from {cls}.configure_optimizers at each fit: "
        f"change it there;\n# the same for this {cls} instance, until the class changes:\n"
    )
    return head + (f.placed_after_build(model, patch) if info.model_variable else patch)


def _lightning_flag_code(f: Facts, info: trainers.TrainerInfo, opt: OptimizerStat, flag: str) -> str:
    if flag == "fused":
        body = ["for group in opt.param_groups:", '    group["fused"], group["foreach"] = True, False']
        comment = f"torch.optim.{opt.type}(..., fused=True): the same update in place, without temporaries"
    else:
        body = ["for group in opt.param_groups:", '    group["foreach"] = False']
        comment = f"torch.optim.{opt.type}(..., foreach=False): the temporaries of one parameter at a time"
    return _lightning_override(f, info, body, comment)


def _lightning_sgd_code(f: Facts, info: trainers.TrainerInfo, opt: OptimizerStat) -> str:
    body = ["opt = torch.optim.SGD([dict(g) for g in opt.param_groups], momentum=0.9)  # its groups and rates"]
    comment = (
        f"A CHANGE TO TRAINING: torch.optim.SGD(..., momentum=0.9) keeps one moment where {opt.type} keeps two "
        "(or torch.optim.Adafactor, torch >= 2.5)"
    )
    return _lightning_override(f, info, body, comment, replaces=True)


def _check_torch(f: Facts) -> Suggestion | None:
    return _step_suggestion(f) or _state_suggestion(f)


# -- Keras ---------------------------------------------------------------------
def _check_keras(f: Facts) -> Suggestion | None:
    """Quiet: no code we can stand behind saves what the profile would claim.

    Recompiling with SGD in a cell below after a fit frees nothing: TF keeps
    the old slots alive once a traced step used them, even after gc.collect(),
    keras.backend.clear_session() and `del model` (measured: a fit, then all
    three, left all 60 MiB of an MLP's weights and slots in TF's counter; an
    eager loop frees them). And a fresh kernel that compiles with SGD before
    the first fit saves what TF's BFC allocator decides, not half the slots:
    its blocks are not split when the rest would be small, so the same
    tensors take other block sizes (measured with TF's own counter, TF 2.21,
    CPU, BFC: a wide MLP whose peak is in the backward, half the slots = 40
    MiB, peak +8 MiB; nested Dense blocks, 6 MiB, -0; a GradientTape loop,
    22.2 MiB, 1.4 MiB saved; a tf.data pipeline, 10.9 MiB, 10.3 MiB).
    Until the what-if engine runs Keras steps, the rule says nothing."""
    return None


def check(f: Facts) -> Suggestion | None:
    if f.framework == "torch":
        return _check_torch(f)
    if f.framework == "tensorflow":
        return _check_keras(f)
    return None
