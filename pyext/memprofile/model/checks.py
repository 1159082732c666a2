"""What a profile read from a file must hold between its fields, beyond each
number's own range (model/codec.py): a timeline's columns have one entry per
point, indices fall inside the lists they index, steps are numbered 1..n in
order, ranks lie within the job's size. A file edited by hand (or damaged)
that breaks one is refused with ProfileFormatError naming the field, before
any renderer indexes past a list or allocates by a number it holds.
"""

from __future__ import annotations

from memprofile.errors import ProfileFormatError
from memprofile.model.profile import PHASES, MergeInfo, Profile, RankInfo, StepStat, Timeline

#: More ranks than any job has had (the largest run ~100k GPUs); merging sets aside a set of range(world_size).
MAX_WORLD_SIZE = 1 << 20


def check_consistent(profile: Profile) -> None:
    """ProfileFormatError (one line, naming the field) for the first
    inconsistency found in `profile`."""
    for i, timeline in enumerate(profile.timelines):
        check_timeline(timeline, f"profile.timelines[{i}]")
    check_steps(profile.steps)
    if profile.distributed is not None:
        check_rank(profile.distributed, "profile.distributed")
    if profile.merged is not None:
        check_merge(profile.merged)


def check_timeline(timeline: Timeline, where: str) -> None:
    n = len(timeline.t)
    if len(timeline.live_bytes) != n:
        raise ProfileFormatError(
            f"{where}.live_bytes: {len(timeline.live_bytes):,} points, but its t has {n:,} "
            f"(a timeline's columns have one entry per point)"
        )
    for category, column in timeline.by_category.items():
        if len(column) != n:
            raise ProfileFormatError(
                f"{where}.by_category.{category[:40]}: {len(column):,} points, but its t has "
                f"{n:,} (a timeline's columns have one entry per point)"
            )
    for name, count in (("op", len(timeline.labels)), ("layer", len(timeline.labels)), ("phase", len(PHASES))):
        column = getattr(timeline, name)
        if column and len(column) != n:  # empty: not recorded
            raise ProfileFormatError(
                f"{where}.{name}: {len(column):,} points, but its t has {n:,} (a timeline's "
                f"columns have one entry per point, or none)"
            )
        if column and not -1 <= min(column) <= max(column) < count:
            bad = next(k for k, v in enumerate(column) if not -1 <= v < count)
            target = "labels" if name != "phase" else "phases"
            raise ProfileFormatError(
                f"{where}.{name}[{bad}]: {column[bad]:,}, but it indexes the {count} {target} (-1: none)"
            )


def check_steps(steps: list[StepStat]) -> None:
    for i, step in enumerate(steps):
        if step.index != i + 1:
            raise ProfileFormatError(
                f"profile.steps[{i}].index: {step.index:,}, but the {len(steps):,} steps "
                f"are numbered 1 to {len(steps):,} in order"
            )
        if step.rss_peak_first is not None and not 1 <= step.rss_peak_first <= step.index:
            raise ProfileFormatError(
                f"profile.steps[{i}].rss_peak_first: {step.rss_peak_first:,}, but it is a "
                f"step from 1 to this one ({step.index:,})"
            )


def check_rank(rank: RankInfo, where: str) -> None:
    _check_world(rank.world_size, f"{where}.world_size")
    if not 0 <= rank.rank < rank.world_size:
        raise ProfileFormatError(
            f"{where}.rank: {rank.rank:,}, but the job has {rank.world_size:,} ranks (0 to world_size - 1)"
        )


def _check_world(world_size: int, where: str) -> None:
    if not 1 <= world_size <= MAX_WORLD_SIZE:
        raise ProfileFormatError(f"{where}: {world_size:,}, but a job has 1 to {MAX_WORLD_SIZE:,} ranks")


def check_merge(merge: MergeInfo) -> None:
    where = "profile.merged"
    _check_world(merge.world_size, f"{where}.world_size")
    for i, summary in enumerate(merge.ranks):
        if not 0 <= summary.rank < merge.world_size:
            raise ProfileFormatError(
                f"{where}.ranks[{i}].rank: {summary.rank:,}, but the job has {merge.world_size:,} ranks"
            )
        if len(summary.live_bytes) != len(summary.t):
            raise ProfileFormatError(
                f"{where}.ranks[{i}].live_bytes: {len(summary.live_bytes):,} points, but its t has {len(summary.t):,}"
            )
    present = {summary.rank for summary in merge.ranks}
    for name in ("highest", "lowest"):
        rank = getattr(merge, name)
        if rank not in present:
            raise ProfileFormatError(f"{where}.{name}: rank {rank:,}, but no rank of that number is in its ranks")
    for i, rank in enumerate(merge.missing):
        if not 0 <= rank < merge.world_size:
            raise ProfileFormatError(f"{where}.missing[{i}]: {rank:,}, but the job has {merge.world_size:,} ranks")
    for i, timeline in enumerate(merge.timelines):
        check_timeline(timeline, f"{where}.timelines[{i}]")
