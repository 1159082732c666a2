"""The peak anatomy: when the peak device peaked and what was alive then."""

from __future__ import annotations

from memprofile.analysis.lines import BEFORE_CELL
from memprofile.analysis.replay import Replay
from memprofile.model.profile import CATEGORIES, Peak, Profile, TensorInfo

#: How many of the largest live tensors the peak lists.
TOP_TENSORS = 20
NO_LAYER = "(no layer)"
NO_OP = "(no op)"
MAX_INPUT_SHAPES = 8


def _peak_from_timeline(profile: Profile) -> Peak | None:
    """For devices known only by samples (process RSS): everything is "other"."""
    device = profile.peak_device
    if device is None:
        return None
    timeline = profile.timeline(device.name)
    time_s = 0.0
    if timeline and timeline.live_bytes:
        i = max(range(len(timeline.live_bytes)), key=timeline.live_bytes.__getitem__)
        time_s = timeline.t[i]
    return Peak(device=device.name, time_s=time_s, bytes=device.peak_bytes, by_category={"other": device.peak_bytes})


def _unplaced(log, i: int) -> str:
    """What stands for the layer of memory no module made: the cell line and
    op that made it ("line 4: cross_entropy_loss"), where the line is known."""
    line = log.line[i] if log.line else -1
    if line == 0 or log.pre_existing[i]:
        return BEFORE_CELL
    if line > 0:
        op = (log.op[i] or "").split("::")[-1]
        return f"line {line}: {op}" if op else f"line {line}"
    return NO_LAYER


def _peak_from_replay(rp: Replay) -> Peak:
    log = rp.log
    live = rp.live_at_peak()
    by_category: dict[str, int] = {}
    by_layer: dict[str, int] = {}
    by_op: dict[str, int] = {}
    by_line: dict[int, int] = {}
    lines = log.line
    activation_by_layer: dict[str, int] = {}
    input_shapes: list[list[int]] = []
    for i in live:
        size = log.size[i]
        category = log.category[i]
        by_category[category] = by_category.get(category, 0) + size
        layer = log.layer[i] or _unplaced(log, i)
        by_layer[layer] = by_layer.get(layer, 0) + size
        op = log.op[i] or NO_OP
        by_op[op] = by_op.get(op, 0) + size
        if lines and lines[i] >= 0:
            by_line[lines[i]] = by_line.get(lines[i], 0) + size
        if category == "activation":
            activation_by_layer[layer] = activation_by_layer.get(layer, 0) + size
        elif category == "input" and log.shape[i] and len(input_shapes) < MAX_INPUT_SHAPES:
            shape = list(log.shape[i] or [])  # not empty: checked above
            if shape not in input_shapes:
                input_shapes.append(shape)
    largest = sorted(live, key=lambda i: log.size[i], reverse=True)[:TOP_TENSORS]
    tensors = [
        TensorInfo(
            shape=list(log.shape[i] or []),
            dtype=log.dtype[i] or "",
            bytes=log.size[i],
            category=log.category[i],
            op=log.op[i] or None,
            layer=log.layer[i] or None,
            device=log.device,
            line=lines[i] if lines and lines[i] >= 0 else None,
            requested_bytes=log.requested[i] if log.requested and log.requested[i] != log.size[i] else None,
        )
        for i in largest
    ]
    k = rp.peak_index
    row = rp.row[k] if k >= 0 else None
    return Peak(
        device=log.device,
        time_s=max(0.0, rp.t[k]) if k >= 0 else 0.0,
        bytes=rp.peak_bytes,
        op=(log.op[row] or None) if row is not None else None,
        layer=(log.layer[row] or None) if row is not None else None,
        line=(lines[row] if lines and lines[row] >= 0 else None) if row is not None else None,
        by_category={c: by_category[c] for c in CATEGORIES if by_category.get(c)},
        by_layer=dict(sorted(by_layer.items(), key=lambda kv: -kv[1])),
        by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        by_line=dict(sorted(by_line.items())),
        tensors=tensors,
        activation_by_layer=dict(sorted(activation_by_layer.items(), key=lambda kv: -kv[1])),
        input_shapes=input_shapes,
    )


def find_peak(profile: Profile, replays: list[Replay] | None = None) -> Peak | None:
    device = profile.peak_device
    if device is None:
        return None
    for rp in replays or []:
        if rp.log.device == device.name:
            return _peak_from_replay(rp)
    return _peak_from_timeline(profile)
