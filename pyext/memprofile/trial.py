"""Try a suggestion: run the code once as it is and once with the change
applied in place, profile both, and measure the difference.

Changes (the `--try` values):
- `amp`: the run inside `torch.autocast` (bfloat16 on CPU, float16 on CUDA);
- `inference_mode`: the run inside `torch.inference_mode()`;
- `checkpoint[=layer,...]`: the named modules' forward wrapped in
  `torch.utils.checkpoint.checkpoint` (use_reentrant=False) for the run;
  without names, the blocks of the model's largest ModuleList.

Every change is undone after the run, also when it raises. Running the code
twice changes whatever it changes (a training step trains twice): callers say
so before they run it, and nothing here runs without being asked.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from memprofile.analysis.compare import Comparison, compare
from memprofile.errors import MemprofileError
from memprofile.model.profile import Note, Profile

CHANGES = ("amp", "inference_mode", "checkpoint")
#: Which suggestion each change measures.
SUGGESTION_OF = {"amp": "amp", "inference_mode": "inference_mode", "checkpoint": "gradient_checkpointing"}
RERUN_WARNING = ("Trying a change runs the cell twice more (as it is, then changed): whatever it changes, it "
                 "changes twice (a training cell trains two more steps).")


@dataclass
class Trial:
    change: str
    before: Profile
    after: Profile
    comparison: Comparison

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
        raise MemprofileError(f"cannot try {text!r}: the changes that can be tried are {', '.join(CHANGES)} "
                              f"(checkpoint=layer,layer,...)")
    names = [n.strip() for n in rest.split(",") if n.strip()]
    if names and kind != "checkpoint":
        raise MemprofileError(f"{kind} takes no layer names")
    return kind, names


def _torch():
    torch = sys.modules.get("torch")
    if torch is None:
        raise MemprofileError("this change needs PyTorch, and the notebook has not imported it")
    return torch


def _modules(namespace: dict) -> list[tuple[str, Any]]:
    """The namespace's torch modules, largest first."""
    torch = _torch()
    found = [(k, v) for k, v in namespace.items() if isinstance(v, torch.nn.Module) and not k.startswith("_")]
    return sorted(found, key=lambda kv: -sum(1 for _ in kv[1].modules()))


def resolve_modules(names: list[str], namespace: dict) -> list[tuple[str, Any]]:
    """Layer names as the profile writes them (`layers.0` inside the largest
    model, `critic.layers.0` inside the model `critic`) -> modules."""
    torch = _torch()
    roots = _modules(namespace)
    if not roots:
        raise MemprofileError("no torch.nn.Module in the notebook's variables: nothing to checkpoint")
    if not names:  # the blocks of the largest ModuleList
        lists = [(f"{n}.{sub}" if sub else n, m) for n, root in roots[:1] for sub, m in root.named_modules()
                 if isinstance(m, torch.nn.ModuleList | torch.nn.Sequential) and len(m) >= 2]
        if not lists:
            raise MemprofileError("no ModuleList or Sequential of blocks found: name the layers, "
                                  "checkpoint=layer,layer,...")
        path, blocks = max(lists, key=lambda pm: sum(p.numel() for p in pm[1].parameters()))
        return [(f"{path}.{i}", b) for i, b in enumerate(blocks)]
    found = []
    for name in names:
        module = None
        for var, root in roots:
            candidates = [name[len(var) + 1:]] if name.startswith(var + ".") else []
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
def applied(change: str, namespace: dict, device: str = "cpu") -> Iterator[None]:
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


def run_trial(run: Callable[[], Any], change: str, *, name: str = "trial", namespace: dict | None = None,
              store: bool = True, **profiler_options) -> Trial:
    """Profile `run()` as it is, then under `change`; the first profile's
    matching suggestion gets the measured saving. Exceptions of either run
    propagate after its profile is kept."""
    from memprofile.profiler import Profiler

    if namespace is None:
        caller = sys._getframe(1)
        namespace = {**caller.f_globals, **caller.f_locals}
    kind, names = parse_change(change)  # a bad change fails before anything runs
    if kind == "checkpoint":
        resolve_modules(names, namespace)
    else:
        _torch()
    # A run that raises leaves its profile stored and propagates (the Profiler's own context manager).
    with Profiler(name=f"{name} (as is)", namespace=namespace, store=store, **profiler_options) as before:
        run()
    device = before.peak_device.name if before.peak_device else "cpu"
    with applied(change, namespace, device):
        with Profiler(name=f"{name} (--try {change})", namespace=namespace, store=store,
                      **profiler_options) as after:
            run()
    after.capture["tried"] = change
    after.capture["compared_with"] = before.id
    comparison = compare(before, after)
    record_measurement(before, change, comparison)
    after.warnings.append(Note("trial", f"run with --try {change}; as is: {before.name!r} ({before.id[:8]})"))
    return Trial(change, before, after, comparison)


def record_measurement(profile: Profile, change: str, comparison: Comparison) -> None:
    """Put what a trial measured on the profile's suggestion for that change."""
    kind, _ = parse_change(change)
    for s in profile.suggestions:
        if s.id == SUGGESTION_OF[kind]:
            s.measured_saving_bytes = comparison.saving_bytes
            s.measured_time_change = comparison.time_change

