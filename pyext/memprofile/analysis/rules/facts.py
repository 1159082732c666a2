"""Figures every rule reads, worked out once per profile, and the one estimator
they share: the peak the timeline would have had without some of its memory.

Estimating from the whole timeline, not from the peak instant alone, matters:
take away the activations and the peak may move to the optimizer step, where
they were already gone; the saving is the old peak minus the new one.
"""

from __future__ import annotations

import textwrap
from functools import cached_property

from memprofile.analysis.cell import CellCode, cell_body
from memprofile.model.profile import (
    PHASES,
    Device,
    LayerStat,
    OptimizerStat,
    Profile,
    Timeline,
    TrainerInfo,
    root_of,
)
from memprofile.units import fmt_bytes

MiB = 1 << 20
#: A rule whose saving is below both floors stays quiet: not worth a change.
MIN_SAVING_BYTES = 4 * MiB
MIN_SAVING_SHARE = 0.05


class Facts:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.peak = profile.peak
        self.device: Device | None = profile.peak_device
        self.timeline: Timeline | None = profile.timeline(self.device.name) if self.device else None
        name = self.device.name if self.device else ""
        source = self.device.source if self.device else ""
        if self.device is None or self.device.kind != "allocator":
            self.framework = None
        elif name.startswith("tf:"):
            self.framework = "tensorflow"
        elif source == "c10" or name.startswith(("cpu", "cuda")):
            self.framework = "torch"
        else:
            self.framework = None
        self.on_gpu = name.startswith(("cuda", "tf:GPU"))
        self.peak_bytes = self.device.peak_bytes if self.device else 0
        self.baseline_bytes = self.device.baseline_bytes if self.device else 0
        self.added_bytes = max(0, self.peak_bytes - self.baseline_bytes)
        phases = set(self.timeline.phase) if self.timeline else set()
        self.phases = {PHASES[i] for i in phases if 0 <= i < len(PHASES)}
        self.trained = "backward" in self.phases
        self.stepped = "optimizer" in self.phases
        self.layers: dict[str, LayerStat] = {layer.name: layer for layer in profile.layers}
        self._parents = {layer.name: layer.parent for layer in profile.layers}

    # -- what the cell touched -------------------------------------------------
    @cached_property
    def cell(self) -> CellCode:
        """The cell's own code (its AST): names, calls, contexts."""
        return CellCode(self.profile.source)

    @property
    def trainer(self) -> TrainerInfo | None:
        """The framework trainer that ran the steps (Hugging Face, Lightning), where one did:
        advice is then in its settings (rules/trainers.py)."""
        return self.profile.trainer

    @cached_property
    def stepped_optimizers(self) -> list[OptimizerStat]:
        """The optimizers the run stepped (not the others the notebook holds)."""
        return [o for o in self.profile.optimizers if o.stepped]

    @cached_property
    def cell_models(self) -> set[str]:
        """Root layers the run used: called, stepped by its optimizers, given
        gradients. (The layer table lists only trees that worked.)"""
        roots = {self.root_of(layer.name) for layer in self.profile.layers}
        for o in self.stepped_optimizers:
            roots.update(o.models)
        return roots

    @cached_property
    def other_models_at_peak(self) -> int:
        """Bytes alive at the peak that belong to layers of models the run did
        not use (another model the notebook holds, with its gradients and
        optimizer state): memory no change to this cell frees."""
        if self.peak is None or not self.profile.optimizers and not self.profile.layers:
            return 0
        used = self.cell_models
        return sum(
            size
            for name, size in self.peak.by_layer.items()
            if not name.startswith(("(", "line "))
            and self.root_of(name) not in used
            and name.split(".", 1)[0] not in used
        )

    def framework_version(self, name: str) -> str:
        return next((fw.version for fw in self.profile.frameworks if fw.name == name), "")

    # -- figures -------------------------------------------------------------
    def at_peak(self, category: str) -> int:
        return self.peak.by_category.get(category, 0) if self.peak else 0

    def at_end(self, category: str) -> int:
        column = self.timeline.by_category.get(category) if self.timeline else None
        return column[-1] if column else 0

    def capacity(self) -> tuple[int | None, str]:
        """The memory the peak device can use, and what it is: the device's
        own size, or for CPU allocators the machine's memory less what the
        process holds outside the allocator."""
        if self.device is None:
            return None, ""
        if self.device.capacity_bytes:
            return self.device.capacity_bytes, f"{self.device.name}'s {fmt_bytes(self.device.capacity_bytes)}"
        host = self.profile.process_device
        if host is None or not host.capacity_bytes or self.device.kind != "allocator":
            return None, ""
        outside = max(0, host.peak_bytes - self.peak_bytes)
        usable = host.capacity_bytes - outside
        return usable, (
            f"the machine's {fmt_bytes(host.capacity_bytes)} less the {fmt_bytes(outside)} the process "
            f"holds outside the allocator"
        )

    def worth_it(self, saving: int) -> bool:
        return saving >= MIN_SAVING_BYTES or (
            self.added_bytes > 0 and saving >= MIN_SAVING_SHARE * self.added_bytes and saving >= MiB
        )

    def share(self, part: int, whole: int | None = None) -> str:
        whole = self.peak_bytes if whole is None else whole
        return f"{100 * part / whole:.0f} %" if whole else "-"

    # -- the estimator -------------------------------------------------------
    def peak_without(
        self,
        remove: dict[str, float],
        *,
        in_phases: set[str] | None = None,
        add_always: int = 0,
        add_in_backward: int = 0,
    ) -> int:
        """The peak of the timeline with `remove[c]` (a fraction) of category
        c's bytes taken away at every point (only at points in `in_phases`
        when given), plus memory the change adds: `add_always` at every point,
        `add_in_backward` at backward points (recomputation)."""
        tl = self.timeline
        if tl is None or not tl.live_bytes:
            return self.peak_bytes
        columns = [(tl.by_category[c], f) for c, f in remove.items() if c in tl.by_category and f]
        backward = PHASES.index("backward")
        wanted = {PHASES.index(p) for p in in_phases} if in_phases is not None else None
        phase = tl.phase or [-1] * len(tl.live_bytes)
        best = 0.0
        for i, live in enumerate(tl.live_bytes):
            value: float = live + add_always
            if wanted is None or phase[i] in wanted:
                value -= sum(col[i] * f for col, f in columns)
            if phase[i] == backward:
                value += add_in_backward
            if value > best:
                best = value
        # The profile's peak may fall between the stored points (process RSS
        # samples): never estimate a saving from the gap.
        return min(self.peak_bytes, int(best)) if columns or add_always or add_in_backward else self.peak_bytes

    def saving_without(self, remove: dict[str, float], **kwargs) -> int:
        return max(0, self.peak_bytes - self.peak_without(remove, **kwargs))

    # -- code ----------------------------------------------------------------
    def cell_inside(self, header: str, placeholder: str = "...  # the cell's code") -> str:
        """`header` with the profiled cell's code indented under it."""
        body = cell_body(self.profile.source.strip("\n"))
        body = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("%%"))
        return f"{header}\n{textwrap.indent(body or placeholder, '    ')}"

    def roots(self) -> list[str]:
        return [layer.name for layer in self.profile.layers if layer.parent is None]

    def root_of(self, name: str) -> str:
        return root_of(name, self._parents)

    @staticmethod
    def op_kind(op: str | None) -> str:
        """An op's own name, without namespace or scope: aten::softmax, model/dense/MatMul -> softmax, MatMul."""
        return (op or "").split("::")[-1].rsplit("/", 1)[-1]

    def library_of(self, root: str) -> str:
        """The package the root model's class comes from ("transformers", "torch"; "" unknown)."""
        return next((layer.library for layer in self.profile.layers if layer.name == root), "")

    def placed_after_build(self, root: str, patch: str) -> str:
        """The patch alone (run it once, below), or, when the cell builds the
        model itself, the cell with the patch right after the model is built
        (a patch run after the cell would be lost when the cell builds a new one)."""
        line = self.cell.bound.get(root)
        tree = self.cell.tree
        if line is None or tree is None:
            return patch
        stmt = next((s for s in tree.body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
        if stmt is None or stmt.lineno != line or stmt.col_offset:
            return patch  # bound inside a loop or a block: no safe place to put it
        lines = self.cell.source.splitlines()
        end = stmt.end_lineno or stmt.lineno
        return "\n".join([*lines[:end], patch, *lines[end:]])

    def relative(self, name: str) -> str:
        """A torch layer's path inside its root module (for get_submodule)."""
        root = self.root_of(name)
        return name[len(root) + 1 :] if name.startswith(root + ".") else name
