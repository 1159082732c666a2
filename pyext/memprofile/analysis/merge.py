"""The ranks of a distributed job as one profile (`memprofile.merge`).

Each rank wrote its own profile (rank_files.py); merging reads them one at a
time and keeps, of each, a summary small enough for hundreds of ranks: the
peak and what was alive then (by kind, the top layers, lines and tensors)
and its timeline reduced to TIMELINE_POINTS (model/decimate.py: each
stretch's lowest and highest point, so no peak is lost). Only the highest
rank's full Profile (the merged profile's body) and the FULL_TIMELINES
highest ranks' full timelines are held; which rank is higher is
RankSummary.standing. Timelines share one axis: each rank's wall clock at its start,
relative to the earliest rank's (hosts' clocks are as good as their NTP).

What the highest rank holds that others do not is its peak's figures minus
the median of the other ranks' (a rank's layers and lines beyond its kept
top few count as at most its smallest kept one, so the excess is a lower
bound), named only where its peak is above the median peak, and within
that margin (see _excess_of).
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import statistics
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from memprofile import rank_files, storage
from memprofile.errors import ProfileFormatError
from memprofile.model.codec import load
from memprofile.model.decimate import minmax_indices
from memprofile.model.merged import MergedProfile, RankProfiles
from memprofile.model.profile import (
    MergeInfo,
    Note,
    Profile,
    RankExcess,
    RankInfo,
    RankSummary,
    TensorInfo,
    Timeline,
)
from memprofile.storage import Url, as_target
from memprofile.units import fmt_bytes

TIMELINE_POINTS = 240
FULL_TIMELINES = 4
TOP_ITEMS = 16
TOP_TENSORS = 8
#: An excess is named when it is at least this, and at least EXCESS_SHARE of the highest peak.
MIN_EXCESS_BYTES = 1 << 20
EXCESS_SHARE = 0.01
EXCESS_PER_KIND = 3

Source = Profile | str | os.PathLike | Url


def expand(sources: Source | Iterable[Source]) -> list[Profile | Path | Url]:
    """Profiles and files to merge: a folder (or a URL prefix) stands for its rank files."""
    if isinstance(sources, Profile | str | os.PathLike | Url):
        sources = [sources]
    items: list[Profile | Path | Url] = []
    for s in sources:
        if isinstance(s, Profile):
            items.append(s)
            continue
        where = as_target(s)
        # a URL's folder is a key prefix: one that ends in / is a folder even before it holds anything
        if (str(s).endswith("/") or storage.is_dir(where)) if isinstance(where, Url) else where.is_dir():
            items.extend(rank_files.find_rank_files(where))
        else:
            items.append(where)
    if not items:
        raise ProfileFormatError("nothing to merge: give the rank profiles' files, or their folder")
    return items


def reduce_points(t: list[float], values: list[int], limit: int = TIMELINE_POINTS) -> tuple[list[float], list[int]]:
    """At most `limit` points (the project's decimation: each stretch's lowest and highest, the peak exact)."""
    keep = minmax_indices(values, limit)
    return [t[i] for i in keep], [values[i] for i in keep]


def start_of(profile: Profile) -> float | None:
    """The wall clock (Unix seconds) at the profile's time 0, where known."""
    if profile.distributed and profile.distributed.started_unix_s is not None:
        return profile.distributed.started_unix_s
    try:
        return datetime.fromisoformat(profile.started_at).timestamp() if profile.started_at else None
    except ValueError:
        return None


def _top(d: dict, n: int) -> dict:
    return dict(sorted(d.items(), key=lambda kv: -kv[1])[:n])


def summarise_rank(profile: Profile, path: str = "") -> RankSummary:
    """A rank's figures on its own clock (offsets are set once all are read)."""
    info = profile.distributed
    assert info is not None
    device = profile.peak_device
    peak = profile.peak if profile.peak and device and profile.peak.device == device.name else None
    timeline = profile.timeline(device.name) if device else None
    t, live = reduce_points(timeline.t, timeline.live_bytes) if timeline else ([], [])
    by_line = _top(peak.by_line, TOP_ITEMS) if peak else {}
    process = profile.process_device
    return RankSummary(
        rank=info.rank,
        name=profile.name,
        peak_bytes=profile.peak_bytes,
        peak_device=device.name if device else "",
        duration_s=profile.duration_s,
        local_rank=info.local_rank,
        host=info.host,
        path=path,
        peak_time_s=peak.time_s if peak else None,
        baseline_bytes=device.baseline_bytes if device else 0,
        end_bytes=device.end_bytes if device else 0,
        process_peak_bytes=process.peak_bytes if process else None,
        by_category=dict(peak.by_category) if peak else {},
        by_layer=_top(peak.by_layer, TOP_ITEMS) if peak else {},
        by_line=by_line,
        line_text={n: text for n in by_line if (text := profile.line_text(n))},
        tensors=sorted(peak.tensors, key=lambda x: -x.bytes)[:TOP_TENSORS] if peak else [],
        steps=len(profile.steps),
        error=f"{profile.error.type}: {profile.error.message[:200]}" if profile.error else None,
        outside_detail=next((n.message for n in profile.warnings if n.code == "step_above_detail"), ""),
        t=t,
        live_bytes=live,
    )


def _tensor_key(x: TensorInfo) -> str:
    """A tensor as the same tensor on every rank would be named: not by its
    address, nor its line or layer (where ranks peaked at different moments,
    the same tensor may have been made by another line)."""
    what = f"{x.dtype}{list(x.shape)}" if x.shape else f"a {fmt_bytes(x.requested_bytes or x.bytes)} block"
    return f"{what} ({x.category})" + (f" from {x.op}" if x.op else "")


def _excess_of(
    kind: str, highest: dict, others: list[dict], bounded: bool, margin: int, least: float
) -> list[RankExcess]:
    """The keys of `highest` holding at least `least` more than the median
    of `others`, largest first. The first is named whatever its size; those
    after it only while together they stay within the peaks' `margin` (or
    the first's excess): where ranks peaked at different moments the same
    memory can sit on other lines (a bucket rebuilt in another step), and
    such shifts would otherwise read as an excess."""
    found = []
    for key, value in highest.items():
        # a key beyond a rank's kept top few: at most its smallest kept value
        seen = [o.get(key, min(o.values(), default=0) if bounded and len(o) >= TOP_ITEMS else 0) for o in others]
        typical = int(statistics.median(seen)) if seen else 0
        if value - typical >= least:
            found.append(RankExcess(kind=kind, name=str(key), bytes=value, others_bytes=typical))  # type: ignore[arg-type]
    found.sort(key=lambda e: e.others_bytes - e.bytes)
    kept: list[RankExcess] = []
    total = 0
    for e in found[:EXCESS_PER_KIND]:
        total += e.bytes - e.others_bytes
        if kept and total > max(margin, kept[0].bytes - kept[0].others_bytes) + least:
            break
        kept.append(e)
    return kept


def excess(highest: RankSummary, others: list[RankSummary]) -> list[RankExcess]:
    """What `highest` holds at its peak beyond the median of `others`."""
    if not others:
        return []
    least = max(MIN_EXCESS_BYTES, EXCESS_SHARE * highest.peak_bytes)
    margin = highest.peak_bytes - int(statistics.median(o.peak_bytes for o in others))
    if margin < least:
        return []  # the ranks peak alike: what differs is when, not what

    def of(kind: str, pick, bounded: bool) -> list[RankExcess]:
        return _excess_of(kind, pick(highest), [pick(o) for o in others], bounded, margin, least)

    lines = of("line", lambda s: s.by_line, True)
    for e in lines:  # name a line by its text too
        text = highest.line_text.get(int(e.name))
        e.name = f"line {e.name}" + (f": {text}" if text else "")

    def tensor_bytes(s: RankSummary) -> dict[str, int]:
        out: Counter[str] = Counter()
        for x in s.tensors:
            out[_tensor_key(x)] += x.bytes
        return dict(out)

    tensors = of("tensor", tensor_bytes, False)
    layers = of("layer", lambda s: s.by_layer, True)
    categories = of("category", lambda s: s.by_category, False)
    return lines + tensors + layers + categories


class _Reader:
    """Reads the ranks one by one, keeping what the merge needs of each."""

    def __init__(self, full_timelines: int) -> None:
        self.summaries: list[RankSummary] = []
        self.starts: list[float | None] = []
        self.infos: list[RankInfo] = []
        self.highest: Profile | None = None
        self.highest_standing = (0, 0)
        # min-heap of (standing, order read, rank, timeline): the highest ranks' full timelines
        self.full: list[tuple[tuple[int, int], int, int, Timeline]] = []
        self.full_timelines = full_timelines

    def read(self, item: Profile | Path | Url) -> None:
        where = "a profile" if isinstance(item, Profile) else str(item)
        profile = item if isinstance(item, Profile) else load(item)
        if profile.merged is not None:
            raise ProfileFormatError(f"{where} is already a merged profile: merge the ranks' own files")
        if profile.distributed is None:
            raise ProfileFormatError(
                f"{where} ({profile.name!r}) is not one rank of a distributed job: it records no rank (profiles "
                f"written under torchrun, with RANK and WORLD_SIZE set, do)"
            )
        path = "" if isinstance(item, Profile) else str(item if isinstance(item, Url) else Path(item).resolve())
        summary = summarise_rank(profile, path)
        self.summaries.append(summary)
        self.starts.append(start_of(profile))
        self.infos.append(profile.distributed)
        if self.highest is None or summary.standing > self.highest_standing:
            self.highest, self.highest_standing = profile, summary.standing
        timeline = profile.timeline(summary.peak_device)
        if timeline is not None and self.full_timelines > 0:
            entry = (summary.standing, len(self.summaries), summary.rank, timeline)
            if len(self.full) < self.full_timelines:
                heapq.heappush(self.full, entry)
            elif entry[0] > self.full[0][0]:
                heapq.heapreplace(self.full, entry)


def _check(reader: _Reader) -> None:
    seen: dict[int, str] = {}
    for s in reader.summaries:
        if s.rank in seen:
            raise ProfileFormatError(
                f"rank {s.rank} appears twice ({seen[s.rank] or 'a profile'} and "
                f"{s.path or 'a profile'}): merge one run's files"
            )
        seen[s.rank] = s.path
    worlds = {i.world_size for i in reader.infos}
    if len(worlds) > 1:
        raise ProfileFormatError(
            f"these profiles come from jobs of different sizes (world sizes {sorted(worlds)}): merge one run's files"
        )
    runs = {i.run_id for i in reader.infos if i.run_id}
    if len(runs) > 1:
        raise ProfileFormatError(
            f"these profiles come from different runs ({', '.join(sorted(runs))}): merge one run's files"
        )


def merge(
    sources: Source | Iterable[Source], name: str | None = None, full_timelines: int = FULL_TIMELINES
) -> MergedProfile:
    """One profile of a distributed job's ranks: `sources` are the ranks'
    profiles, their files, or the folder they were written to."""
    items = expand(sources)
    reader = _Reader(full_timelines)
    for item in items:
        reader.read(item)
    _check(reader)
    order = sorted(range(len(items)), key=lambda i: reader.summaries[i].rank)
    summaries = [reader.summaries[i] for i in order]
    starts = [reader.starts[i] for i in order]
    infos = [reader.infos[i] for i in order]
    highest = reader.highest
    assert highest is not None and highest.distributed is not None
    known = [s for s in starts if s is not None]
    origin = min(known) if known else 0.0
    offsets = {s.rank: (start - origin if start is not None else 0.0) for s, start in zip(summaries, starts)}
    for s in summaries:
        s.offset_s = offsets[s.rank]
        s.t = [round(x + s.offset_s, 6) for x in s.t]
        if s.peak_time_s is not None:
            s.peak_time_s += s.offset_s
    peaks = [s.peak_bytes for s in summaries]
    top = max(summaries, key=lambda s: s.standing)  # the rank whose profile is the body
    low = min(summaries, key=lambda s: s.standing)  # another one, where all peaks are equal
    mean = statistics.fmean(peaks)
    world = infos[0].world_size
    info = MergeInfo(
        world_size=world,
        ranks=summaries,
        highest=top.rank,
        lowest=low.rank,
        imbalance=(top.peak_bytes / mean - 1) if mean else 0.0,
        skew_s=max(offsets.values()) if known else 0.0,
        backend=next((i.backend for i in infos if i.backend), ""),
        run_id=next((i.run_id for i in infos if i.run_id), ""),
        hosts=len({i.host for i in infos}),
        excess=excess(top, [s for s in summaries if s.rank != top.rank]),
        missing=sorted(set(range(world)) - {s.rank for s in summaries}),
        timelines=[_aligned(tl, rank, offsets[rank]) for _, _, rank, tl in sorted(reader.full, reverse=True)],
    )
    merged = MergedProfile(**{f.name: getattr(highest, f.name) for f in dataclasses.fields(Profile)})
    merged.id = uuid.uuid4().hex
    merged.name = name or f"{highest.name} · {len(summaries)} ranks"
    merged.distributed = None
    merged.merged = info
    merged.warnings = [*highest.warnings, *merge_notes(info, known_clocks=len(known) == len(starts))]
    merged.capture = {**highest.capture, "merged_ranks": str(len(summaries)), "shown_rank": str(top.rank)}
    merged.ranks = RankProfiles([_source(items[i]) for i in order])
    return merged


def _source(item: Profile | Path | Url) -> Profile | str:
    return item if isinstance(item, Profile) else str(item)


def _aligned(timeline: Timeline, rank: int, offset: float) -> Timeline:
    t, live = reduce_points(timeline.t, timeline.live_bytes, limit=4000)
    return Timeline(
        device=f"rank {rank} · {timeline.device}",
        t=[x + offset for x in t],
        live_bytes=live,
        recorded_points=timeline.recorded_points or len(timeline.t),
    )


def merge_notes(info: MergeInfo, known_clocks: bool = True) -> list[Note]:
    """What a reader of the merged profile must know about how it was put together."""
    notes = [
        Note(
            "merged_ranks",
            (
                f"merged from {len(info.ranks)} ranks of {info.world_size}: the views below are rank {info.highest}'s, "
                f"the highest; every rank's peak and timeline are in the ranks view"
            ),
        )
    ]
    if info.missing:
        notes.append(
            Note(
                "missing_ranks",
                (
                    f"no profile from rank(s) {_listed(info.missing)}: "
                    f"a rank killed before it ended (the OOM killer, a "
                    f"launcher that gave up) writes none; its memory is not in this report"
                ),
            )
        )
    if not known_clocks:
        notes.append(Note("unaligned_ranks", "some ranks record no wall clock: their timelines start at 0"))
    elif info.hosts > 1:
        notes.append(
            Note(
                "clock_skew",
                (
                    f"timelines are aligned by each host's wall clock: the ranks started within {info.skew_s:.3f} s of "
                    f"each other, and the {info.hosts} hosts' clocks may differ by their NTP offset (usually a few ms)"
                ),
            )
        )
    outside = [s for s in info.ranks if s.outside_detail]
    if outside:
        notes.append(
            Note(
                "ranks_above_detail",
                (
                    f"rank(s) {_listed([s.rank for s in outside])} peaked outside their detailed steps "
                    f"(rank {outside[0].rank}: {outside[0].outside_detail}); "
                    f"ranks are compared by their detailed steps' "
                    f"peaks, and the process column shows each rank's resident peak over the whole run; record those "
                    f"steps in detail to compare them"
                ),
                "torchrun ... memprofile run --detail-steps all ...   # or the window each rank's note names",
            )
        )
    errors = [s for s in info.ranks if s.error]
    if errors:
        notes.append(Note("rank_errors", "; ".join(f"rank {s.rank} raised {s.error}" for s in errors[:8])))
    return notes


def _listed(ranks: list[int], limit: int = 16) -> str:
    return ", ".join(map(str, ranks[:limit])) + (" …" if len(ranks) > limit else "")
