"""Try a suggestion: run the code as it is and with the change applied in
place, profile both, and measure the difference between like runs.

A run can leave state the next run starts with: an optimizer's first step
creates its state, a first backward the gradients, a cell that builds its
model the parameters. When the run as is created such state, the changed run
would start with it and the comparison would charge the change with it (and
with the first run's warm-up time): the code then runs as is once more, and
that second, warm run is the one compared. The notes say so.

Changes (the `--try` values):
- `amp`: the run inside `torch.autocast` (bfloat16 on CPU, float16 on CUDA);
- `inference_mode`: the run inside `torch.inference_mode()`;
- `checkpoint[=layer,...]`: the named modules' forward wrapped in
  `torch.utils.checkpoint.checkpoint` (use_reentrant=False) for the run;
  without names, the blocks of the model's largest ModuleList.

"Try it" measures the code the suggestion shows: when the cell's source is
known and runs in an IPython shell, and the first run's suggestion for the
change (or, with none, the rule's own rewrite) is the cell rewritten (amp's
forward and loss under autocast, backward and step outside it; the cell
under inference_mode; the cell with its model's blocks checkpointed where
it builds the model), that rewritten cell is the changed run. Otherwise the
change is applied around the whole run as above, and the comparison says so.

Every change is undone after the run, also when it raises. Running the code
two or three times changes whatever it changes (a training step trains two or
three more steps): callers say so before they run it, and nothing here runs
without being asked.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from memprofile.analysis.cell import cell_body
from memprofile.analysis.compare import Comparison, compare, state_created, state_text
from memprofile.errors import MemprofileError
from memprofile.model.profile import Note, Profile
from memprofile.render.compare import ShownComparison, shown

CHANGES = ("amp", "inference_mode", "checkpoint")
#: Which suggestion each change measures.
SUGGESTION_OF = {"amp": "amp", "inference_mode": "inference_mode", "checkpoint": "gradient_checkpointing"}
#: What a trial's runs are called, after the name of what was tried.
AS_IS, WARM = "as is", "as is, warm"
# A name that is already a trial's ("blocks (as is)", "blocks #2 (--try amp)"): its base is "blocks".
_TRIAL_NAME = re.compile(r"(?: #\d+)?(?: \((?:as is(?:, warm)?|--try [^()]*)\))+$")


@dataclass
class Trial:
    change: str
    #: The run as is that was compared: the second, warm one when the first created state.
    before: Profile
    after: Profile
    comparison: ShownComparison
    #: The first run as is, when it created state and so was run again (not compared).
    first: Profile | None = None
    #: State each run created that the next run starts with: profile name -> category -> bytes.
    created: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def saving_bytes(self) -> int:
        return self.comparison.saving_bytes

    @property
    def time_change(self) -> float | None:
        return self.comparison.time_change

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return self.comparison._repr_mimebundle_()

    def __repr__(self) -> str:
        return f"<Trial {self.change}: {self.comparison!r}>"


def parse_change(text: str) -> tuple[str, list[str]]:
    kind, _, rest = text.partition("=")
    kind = kind.strip()
    if kind not in CHANGES:
        raise MemprofileError(
            f"cannot try {text!r}: the changes that can be tried are {', '.join(CHANGES)} (checkpoint=layer,layer,...)"
        )
    names = [n.strip() for n in rest.split(",") if n.strip()]
    if names and kind != "checkpoint":
        raise MemprofileError(f"{kind} takes no layer names")
    return kind, names


def _torch():
    torch = sys.modules.get("torch")
    if torch is None:
        raise MemprofileError("this change needs PyTorch, and the notebook has not imported it")
    return torch


def _modules(namespace: Mapping) -> list[tuple[str, Any]]:
    """The namespace's torch modules, largest first."""
    torch = _torch()
    found = [(k, v) for k, v in namespace.items() if isinstance(v, torch.nn.Module) and not k.startswith("_")]
    return sorted(found, key=lambda kv: -sum(1 for _ in kv[1].modules()))


def resolve_modules(names: list[str], namespace: Mapping) -> list[tuple[str, Any]]:
    """Layer names as the profile writes them (`layers.0` inside the largest
    model, `critic.layers.0` inside the model `critic`) -> modules."""
    torch = _torch()
    roots = _modules(namespace)
    if not roots:
        raise MemprofileError("no torch.nn.Module in the notebook's variables: nothing to checkpoint")
    if not names:  # the blocks of the largest ModuleList
        lists = [
            (f"{n}.{sub}" if sub else n, m)
            for n, root in roots[:1]
            for sub, m in root.named_modules()
            if isinstance(m, torch.nn.ModuleList | torch.nn.Sequential) and len(m) >= 2
        ]
        if not lists:
            raise MemprofileError(
                "no ModuleList or Sequential of blocks found: name the layers, checkpoint=layer,layer,..."
            )
        path, blocks = max(lists, key=lambda pm: sum(p.numel() for p in pm[1].parameters()))
        return [(f"{path}.{i}", b) for i, b in enumerate(blocks)]
    found = []
    for name in names:
        module = None
        for var, root in roots:
            candidates = [name[len(var) + 1 :]] if name.startswith(var + ".") else []
            candidates.append(name)
            for path in candidates:
                try:
                    module = root.get_submodule(path)
                    break
                except AttributeError:
                    continue
            if module is not None:
                break
        if module is None:
            raise MemprofileError(f"no module {name!r} in the notebook's models ({', '.join(v for v, _ in roots)})")
        found.append((name, module))
    return found


@contextlib.contextmanager
def applied(change: str, namespace: Mapping, device: str = "cpu") -> Iterator[None]:
    kind, names = parse_change(change)
    torch = _torch()
    if kind == "amp":
        on_cuda = device.startswith("cuda")
        with torch.autocast("cuda" if on_cuda else "cpu", dtype=torch.float16 if on_cuda else torch.bfloat16):
            yield
        return
    if kind == "inference_mode":
        with torch.inference_mode():
            yield
        return
    from torch.utils.checkpoint import checkpoint

    modules = resolve_modules(names, namespace)
    saved = []
    for _, module in modules:
        saved.append((module, module.__dict__.get("forward")))
        module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)
    try:
        yield
    finally:
        for module, own in reversed(saved):
            if own is None:
                del module.forward
            else:
                module.forward = own


def shown_code(change: str, before: Profile) -> str | None:
    """The cell rewritten as the change's suggestion shows it: the first run's
    suggestion's code when it is for this very change (the same
    `try_change`), else the rule's own rewrite of the cell (amp, inference_mode).
    None when that code is no rewrite of the cell (a patch to run once,
    a comment on where autocast goes in a function): the change is then
    applied around the run."""
    kind, _ = parse_change(change)
    source = cell_body(before.source or "")
    if not source.strip():
        return None
    made = next((s for s in before.suggestions if s.id == SUGGESTION_OF[kind] and s.try_change == change), None)
    code = made.code if made is not None else _rewritten(kind, before)
    return code if code is not None and _rewrites(code, source) else None


def _rewritten(kind: str, before: Profile) -> str | None:
    """What the rule's code would be for this cell when the rule did not speak
    (its saving was below the floor): the same rewrite it makes."""
    from memprofile.analysis.rules import autocast_code
    from memprofile.analysis.rules.facts import Facts

    f = Facts(before)
    if kind == "amp":
        device = "cuda" if f.on_gpu else "cpu"
        optimizers = tuple(o.name for o in f.stepped_optimizers if o.name.isidentifier())
        return autocast_code.rewrite(before.source, device=device, trained=f.trained, optimizers=optimizers)
    if kind == "inference_mode":
        return f.cell_inside("import torch\n\nwith torch.inference_mode():")
    return None


def _statements(text: str) -> list[str]:
    """The code's lines that do something: no comments, magics or imports."""
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith(("#", "%", "import ", "from "))]


def _rewrites(code: str, source: str) -> bool:
    """`code` is the cell changed: most of the cell's lines are in it, and it
    is not the cell itself (with comments or imports added)."""
    cell, new = _statements(source), _statements(code)
    kept = set(new)
    return bool(cell) and new != cell and sum(line in kept for line in cell) >= 0.5 * len(cell)


def _runner(code: str, namespace: Mapping) -> Callable[[], Any] | None:
    """A run of `code` as a cell of the IPython shell whose namespace this is
    (compiled as the magic compiles a cell); None outside one."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or shell.user_ns is not namespace:
        return None
    from memprofile.cell_runner import compile_cell, run_compiled

    body, last = compile_cell(shell, code)
    return lambda: run_compiled(shell, body, last)


def trial_base(name: str) -> str:
    """The name trials of `name` are named after: a trial's own profile
    ("blocks (as is)") gives its cell's ("blocks"), so suffixes never stack."""
    return _TRIAL_NAME.sub("", name) or name


def _unused_base(base: str) -> str:
    """`base`, or `base #2`, `base #3`, ...: the first whose trial names no
    stored profile has, so every trial's profiles are told apart."""
    from memprofile.store import STORE

    names = {p.name for p in STORE.all()}
    candidate, n = base, 1
    while any(_TRIAL_NAME.fullmatch(other[len(candidate) :]) for other in names if other.startswith(candidate)):
        n += 1
        candidate = f"{base} #{n}"
    return candidate


def run_trial(
    run: Callable[[], Any],
    change: str,
    *,
    name: str = "trial",
    namespace: Mapping | None = None,
    store: bool = True,
    **profiler_options,
) -> Trial:
    """Profile `run()` as it is (twice when the first run created state, see
    the module's doc), then under `change`, and compare the last run as is
    with the changed one; their profiles' matching suggestions get the
    measured saving. Exceptions of any run propagate after its profile is kept."""
    from memprofile.profiler import Profiler, caller_namespace

    namespace = caller_namespace(namespace)
    kind, names = parse_change(change)  # a bad change fails before anything runs
    if kind == "checkpoint":
        resolve_modules(names, namespace)
    else:
        _torch()
    base = trial_base(name)
    unique = _unused_base(base) if store else base

    def profiled(run_name: str, run=run, **changed) -> Profile:
        # A run that raises leaves its profile stored and propagates (the Profiler's own context manager).
        options = {**profiler_options, **changed}
        # feed_live=False: a trial's runs are not the user's cell; fed live, the panel would open
        # each run's profile in place of the suggestion whose trial it shows
        with Profiler(name=f"{unique} ({run_name})", namespace=namespace, store=store, feed_live=False, **options) as p:
            run()
        p.capture["trial_of"] = base
        created = state_created(p)
        if created:
            p.warnings.append(
                Note(
                    "state_created",
                    f"this run created {state_text(created)} that it did not start with: a next run starts with it",
                )
            )
        return p

    first = before = profiled(AS_IS)
    if state_created(first):
        before = profiled(WARM)
    device = before.peak_device.name if before.peak_device else "cpu"
    code = shown_code(change, before) if profiler_options.get("source") else None
    changed_run = _runner(code, namespace) if code is not None else None
    how = None  # a function tried (no cell source): the change can only go around the run
    if code is not None and changed_run is not None:
        after = profiled(f"--try {change}", changed_run, source=code)
        how = f"ran the code the {SUGGESTION_OF[kind]} suggestion shows in place of the cell"
    else:
        with applied(change, namespace, device):
            after = profiled(f"--try {change}")
        # checkpoint's patch, run around the cell, is its code's own effect (undone after)
        if profiler_options.get("source") and kind != "checkpoint":
            how = f"applied {change} around the whole cell (its suggestion's code is no rewrite of the cell)"
    after.capture["tried"] = change
    after.capture["compared_with"] = before.id
    comparison = shown(compare(before, after))
    if how is not None:
        comparison.notes.append(how)
    runs = [first, after] if first is before else [first, before, after]
    created = {p.name: c for p in runs if (c := state_created(p))}
    if first is not before:  # compare() notes what the compared runs themselves created
        comparison.notes.insert(
            0, f"the first run as is created {state_text(created[first.name])}; compared the second, warm run as is"
        )
    for p in runs[:-1]:
        record_measurement(p, change, comparison)
    after.warnings.append(Note("trial", f"run with --try {change}; as is: {before.name!r} ({before.id[:8]})"))
    return Trial(change, before, after, comparison, first=first if first is not before else None, created=created)


def record_measurement(profile: Profile, change: str, comparison: Comparison) -> None:
    """Put what a trial measured on the profile's suggestion for that change,
    with the peak it was measured against (the percentage's denominator)."""
    kind, _ = parse_change(change)
    for s in profile.suggestions:
        if s.id == SUGGESTION_OF[kind]:
            s.measured_saving_bytes = comparison.saving_bytes
            s.measured_time_change = comparison.time_change
            s.measured_peak_before_bytes = comparison.peak.before
