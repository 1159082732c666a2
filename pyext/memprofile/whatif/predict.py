"""Will it fit: a profile's run predicted at another batch, sequence length and device.

Two methods, the first that can run:
- "fake execution": the cell re-executed on fake tensors (whatif/engine.py) at the
  measured scale and at the asked one; the prediction is the measured peak plus what
  the fake runs differ by, so whatever the fake run does not see (a kernel's own
  buffers) is carried over as measured. On a CUDA target the fake run's allocations,
  with cuBLAS's workspaces, go through the caching allocator's simulation
  (analysis/predict/allocator.py) for the reserved peak.
- "replay": the recorded timeline with its batch-sized memory scaled
  (analysis/predict/scale.py), where the kernel no longer has the cell's names (a
  loaded profile, the CLI) or the cell cannot run on fake tensors (the note says why).
The largest batch comes from a line through two predicted points, checked by one more;
past three fake runs at one sequence length, the search's points are on the line their
rows' sizes make (engine.BatchLine: no fake run), and the batch found, and one more, are
fake runs that must agree with it.

A Keras/TensorFlow profile (its peak on a "tf:" device) takes whatif/keras_predict.py's path:
"keras layers" (the model's layers and optimizer slots; nothing runs again) or "replay".
"""

from __future__ import annotations

import math
import re
from typing import Any

from memprofile.analysis.predict.allocator import log_events, simulate
from memprofile.analysis.predict.devices import HEADROOM, DeviceSpec, device_spec, device_total_bytes, fits
from memprofile.analysis.predict.scale import measured_scale, replayed_peak
from memprofile.model.profile import Prediction, Profile
from memprofile.units import fmt_bytes
from memprofile.whatif.engine import BatchLine, FakeRun, StepSource, batch_line, fake_run
from memprofile.whatif.estimate import base_run, climb_gap, disagrees, measured_peak, others_bytes
from memprofile.whatif.keras_predict import KerasPredictor, is_tensorflow

NOT_MODELLED = (
    "not modelled: NCCL buffers, cuDNN's workspace choice, other processes on the device, "
    "and GPU kernels that differ from the CPU's (the CPU run's ops stand for them)"
)
#: Bound on the largest-batch search: larger batches are not tried.
MAX_BATCH = 1 << 24


def parse_scale(value: int | str | None, measured: int | None, what: str) -> tuple[float, int | None]:
    """(factor, absolute) for `value`: an int, "4x"/"4×" (times the measured), or None (as measured)."""
    if value is None:
        return 1.0, measured
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[x×]\s*", value)
        if m:
            factor = float(m.group(1))
            if factor <= 0:
                raise ValueError(f"{what}={value!r}: a factor must be positive")
            return factor, round(measured * factor) if measured else None
        if not value.strip().isdigit():
            raise ValueError(f"{what}={value!r}: give a number ({what}=64) or a factor ({what}='4x')")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what}={value!r}: a positive integer or a factor such as '4x'")
    if not measured:
        raise ValueError(f"{what}={value}: the run's own {what} is unknown here; give a factor ('4x')")
    return value / measured, value


class _Predictor:
    def __init__(self, profile: Profile, spec: DeviceSpec, expandable: bool) -> None:
        self.profile, self.spec, self.expandable = profile, spec, expandable
        device = profile.peak_device
        if device is None or device.kind != "allocator":
            raise ValueError(
                "will it fit predicts PyTorch and Keras runs; this profile measured no torch allocator or TF's"
            )
        if not (device.name == "cpu" or device.name.startswith("cuda")):
            raise ValueError(f"will it fit predicts PyTorch and Keras runs; this profile peaked on {device.name}")
        self.measured_peak = measured_peak(profile)
        self.source: StepSource | None = getattr(profile, "_step_source", None)
        self.notes: list[str] = []
        self.base: FakeRun | None = None
        #: The fake runs made, per sequence factor; the line through them; the totals taken from it.
        self.made: dict[float, list[FakeRun]] = {}
        self.lines: dict[float, BatchLine | None] = {}
        self.from_line: dict[tuple[int, float], int] = {}
        #: The last point asked was replayed (its fake run failed, or there is none).
        self.replayed = False
        # a step ran in the cell (not an optimizer the notebook merely holds): backward's cuBLAS handle too
        self.training = bool(profile.steps)
        if self.source is not None:
            base = base_run(profile, self.source)
            gap = climb_gap(profile, base) if base.ok else 0
            why = disagrees(profile, base) if base.ok else None
            if why is not None and gap < 0:  # the fake run sees more than ran: it cannot stand for the run
                self.notes.append(why + ": replayed instead")
            elif base.ok and base.batch_size:
                if why is not None:
                    self.notes.append(
                        f"{why} ({fmt_bytes(gap)}); taken to grow with the batch and the sequence, as kernels' "
                        "buffers for activations do"
                    )
                self.base = base
            elif base.ok:
                self.notes.append("the cell's models were not called with a tensor: no batch dimension to scale")
            else:
                self.notes.append(f"the cell could not run on fake tensors ({base.error}): replayed instead")
        elif getattr(profile, "_no_rerun", None):
            why = profile._no_rerun  # type: ignore[attr-defined]
            self.notes.append(f"the run's code cannot run again ({why}): the recorded timeline was replayed")
        else:
            self.notes.append(
                "the run's code is not at hand (a saved profile, a script, a run outside a notebook): "
                "the recorded timeline was replayed"
            )
        if self.base is not None:
            self.made[1.0] = [self.base]
            self.method = "fake execution"
            self.batch, self.seq = self.base.batch_size, self.base.seq_len
            self.notes.extend(self.base.notes)
        else:
            self.method = "replay"
            self.batch, self.seq = measured_scale(profile)

    def at(self, batch: float, seq: float, run: FakeRun | None = None) -> tuple[int, int]:
        """(allocated, reserved) peaks at `batch` and `seq` times the measured run (`run`: the
        fake run there, from the line through others)."""
        if self.base is not None and self.source is not None:
            if run is None and batch == 1.0 and seq == 1.0:  # the base run is that run: not made twice
                run = self.base
            elif run is None:
                run = fake_run(self.source, batch=batch, seq=seq, batch_size=self.batch, seq_len=self.seq)
                self.made.setdefault(seq, []).append(run)
            if run.ok and run.log is not None:
                unseen = self.unseen(batch, seq)
                allocated = run.peak_bytes + unseen
                if not self.spec.is_cuda:
                    return allocated, allocated
                sim = simulate(self._with_workspaces(log_events(run.log)), expandable_segments=self.expandable)
                return allocated + self.workspaces, sim.reserved_peak_bytes + max(0, unseen)
            self.notes.append(f"at {batch:g}x the batch the fake run failed ({run.error}): replayed instead")
        self.replayed = True
        allocated = replayed_peak(self.profile, batch, seq)
        if not self.spec.is_cuda:
            return allocated, allocated
        # No blocks to simulate: the workspaces on top, in whole 2 MiB pages (the cache's rounding aside).
        reserved = allocated + self.workspaces
        if "replay: reserved" not in " ".join(self.notes):
            self.notes.append(
                "replay: reserved is the allocated peak plus cuBLAS's workspaces, without the cache's rounding"
            )
        return allocated + self.workspaces, -(-reserved // (2 << 20)) * (2 << 20)

    def unseen(self, batch: float, seq: float) -> int:
        """What the measured run held that the fake run at this size does not: the notebook's
        other tensors (the measured start beyond the fake copies'), as they are, on the CPU
        (on a GPU they would not be there), and the
        kernels' own buffers (climb_gap: a CPU convolution's backward), which grow with the batch
        and the sequence as the activations they serve do (a ResNet's: 0.52 MB per 8 images at
        4x and 8x alike); a fake run that climbs higher than the measured one is taken as is."""
        assert self.base is not None
        # On another device only what the run uses is there: the notebook's other tensors stay behind.
        others = others_bytes(self.profile, self.base) if not self.spec.is_cuda else 0
        gap = climb_gap(self.profile, self.base)
        return others + (round(gap * batch * seq) if gap > 0 else gap)

    @property
    def workspaces(self) -> int:
        """cuBLAS's workspaces: allocated blocks of the caching allocator (0 on the CPU)."""
        return (2 if self.training else 1) * self.spec.workspace_bytes if self.spec.is_cuda else 0

    def _with_workspaces(self, events: Any) -> Any:
        """cuBLAS's workspace per handle, from the caching allocator at the first matmul:
        one for the forward, one more for backward's thread in a training step."""
        for n in range(2 if self.training else 1):
            yield (("cublas workspace", n), self.spec.workspace_bytes)
        yield from events

    def total(self, reserved: int) -> int:
        return device_total_bytes(self.spec, reserved)

    def _total_at(self, batch: int, seq: float) -> int:
        """The device total at `batch` (samples): on the line through three fake runs at this
        sequence where their rows make one, else from a fake run."""
        assert self.batch
        if seq not in self.lines and len(self.made.get(seq, [])) >= 3:
            self.lines[seq] = batch_line(self.made[seq])
        line = self.lines.get(seq)
        run = line.at(batch) if line is not None else None
        total = self.total(self.at(batch / self.batch, seq, run)[1])
        if run is not None:
            self.from_line[batch, seq] = total
        return total

    def largest_batch(self, seq: float, at_batch: tuple[float, int]) -> int | None:
        """The largest batch whose total fits (`_search`); where the line through the fake runs
        gave the totals at it or one past it, fake runs there check it, and on any difference the
        search is made again with fake runs only."""
        found = self._search(seq, at_batch)
        if not self.batch:
            return found
        for b in (found, found + 1) if found is not None else ():
            if (b, seq) in self.from_line and self.total(self.at(b / self.batch, seq)[1]) != self.from_line[b, seq]:
                self.lines[seq], self.from_line = None, {}
                return self._search(seq, at_batch)
        return found

    def _search(self, seq: float, at_batch: tuple[float, int]) -> int | None:
        """The largest batch whose total fits: the secant through the two predicted
        (batch, total) points nearest the limit (from the measured batch and `at_batch`:
        factor, total), at most 6 times, then halving between the largest batch that fits
        and the smallest that does not until they are neighbours."""
        if not self.batch:
            return None
        limit = self.spec.capacity_bytes * (1 - HEADROOM)
        points = {self.batch: self.total(self.at(1.0, seq)[1])}
        points[max(1, round(at_batch[0] * self.batch))] = at_batch[1]
        if len(points) == 1:
            points[2 * self.batch] = self._total_at(2 * self.batch, seq)
        cap = max(MAX_BATCH, self.batch)
        for _ in range(6):
            fitting = [b for b, t in points.items() if t <= limit]
            over = [b for b, t in points.items() if t > limit]
            low, high = (max(fitting) if fitting else 0), (min(over) if over else None)
            if high is not None and high - low <= 1:
                return low
            (b1, t1), (b2, t2) = sorted(points.items(), key=lambda bt: abs(bt[1] - limit))[:2]
            slope = (t2 - t1) / (b2 - b1) if b2 != b1 else 0
            if slope <= 0:  # two points on one step of the allocator's rounding
                break
            guess = math.floor(b1 + (limit - t1) / slope)
            guess = max(low + 1, min(guess, (high - 1) if high else cap))
            if guess in points:
                break
            points[guess] = self._total_at(guess, seq)
        return self._bisect(points, limit, seq, cap)

    def _bisect(self, points: dict[int, int], limit: float, seq: float, cap: int) -> int:
        """The exact boundary between the largest fitting and the smallest failing batch."""
        assert self.batch
        for _ in range(24):
            fitting = [b for b, t in points.items() if t <= limit]
            over = [b for b, t in points.items() if t > limit]
            low, high = (max(fitting) if fitting else 0), (min(over) if over else None)
            if high is None and low < cap:
                points[cap] = self._total_at(cap, seq)
                continue
            if high is None:
                self.notes.append(f"the batch search stopped at {cap:,}: a larger one may fit")
                return low
            if high - low <= 1:
                return low
            mid = (low + high) // 2
            points[mid] = self._total_at(mid, seq)
        return max(b for b, t in points.items() if t <= limit)


def predict(
    profile: Profile,
    device: str | int,
    *,
    batch: int | str | None = None,
    seq_len: int | str | None = None,
    expandable_segments: bool = False,
    search: bool = True,
) -> Prediction:
    spec = device_spec(device)
    p: _Predictor | KerasPredictor = (
        KerasPredictor(profile, spec) if is_tensorflow(profile) else _Predictor(profile, spec, expandable_segments)
    )
    batch_factor, batch_abs = parse_scale(batch, p.batch, "batch")
    seq_factor, seq_abs = parse_scale(seq_len, p.seq, "seq_len")
    allocated, reserved = p.at(batch_factor, seq_factor)
    method = "replay" if getattr(p, "replayed", False) else p.method  # the asked point's own
    total = p.total(reserved)
    largest = p.largest_batch(seq_factor, (batch_factor, total)) if search else None
    notes = list(dict.fromkeys(p.notes))
    if isinstance(p, KerasPredictor):
        notes.extend(p.device_notes())
    elif spec.is_cuda:
        notes.append(
            f"device total = reserved + the CUDA context ({fmt_bytes(spec.context_bytes)}); "
            f"cuBLAS's workspaces ({fmt_bytes(spec.workspace_bytes)} each) are among the reserved blocks"
        )
        notes.append(NOT_MODELLED)
    else:
        notes.append(
            "on the CPU: torch's allocator only (the process's own memory, libraries and Python objects aside)"
        )
    target = batch_abs if batch_abs is not None else None
    steps = math.ceil(target / largest) if target and largest and largest < target else None
    return Prediction(
        device=spec.name,
        capacity_bytes=spec.capacity_bytes,
        allocated_peak_bytes=int(allocated),
        reserved_peak_bytes=int(reserved),
        device_total_bytes=int(total),
        fits=fits(spec, total),
        method=method,
        headroom=HEADROOM,
        batch=target,
        measured_batch=p.batch,
        seq_len=seq_abs,
        measured_seq_len=p.seq,
        largest_batch=largest,
        accumulation_steps=steps,
        notes=notes,
    )


#: One --predict item: DEVICE[:BATCH[:SEQ_LEN]] (BATCH and SEQ_LEN: a number or "4x").
_ITEM = re.compile(r"^(?P<device>[^:]+?)(?::(?P<batch>[^:]*))?(?::(?P<seq>[^:]*))?$")


def parse_requests(text: str) -> list[tuple[str | int, str | None, str | None]]:
    """`--predict T4,H100-80GB,T4:256,A10G:4x:2x` as (device, batch, seq_len) triples;
    ValueError naming the item and what is known."""
    items = []
    for raw in (s.strip() for s in text.split(",")):
        m = _ITEM.match(raw) if raw else None
        if m is None:
            raise ValueError(f"--predict {text!r}: each item is DEVICE[:BATCH[:SEQ_LEN]], got {raw!r}")
        device: str | int = m["device"].strip()
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        device_spec(device)  # an unknown device: its ValueError names the known ones
        batch, seq = (m["batch"] or None), (m["seq"] or None)
        for what, value in (("batch", batch), ("seq_len", seq)):
            if value is not None and not re.fullmatch(r"\d+|\d+(?:\.\d+)?[x×]", value.strip()):
                raise ValueError(f"--predict {raw!r}: {what} {value!r} is a number (256) or a factor (4x)")
        items.append((device, batch, seq))
    return items


def predict_requested(profile: Profile, items: list[tuple[str | int, str | None, str | None]]) -> list[str]:
    """Each requested prediction, kept in profile.predictions; what could not be predicted, in words."""
    failed = []
    for device, batch, seq in items:
        try:
            profile.predict(device, batch=batch, seq_len=seq)
        except Exception as e:  # a prediction never costs the user the profile
            failed.append(f"{device}{':' + batch if batch else ''}: {e}")
    return failed
