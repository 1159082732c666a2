"""memprofile.merge: ranks' profiles read as one (real torch profiles, made
in this process as each rank would make its own: RANK and WORLD_SIZE set)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import statistics

import pytest

import memprofile
from memprofile.analysis.merge import merge as merge_only
from memprofile.analysis.merge import reduce_points
from memprofile.errors import ProfileFormatError
from memprofile.model.merged import MergedProfile
from memprofile.model.profile import RankInfo
from memprofile.profiler import Profiler
from memprofile.render.report import render_report
from memprofile.render.text import render_text
from tests.imports import V100_DDP

MiB = 2**20


def _conv_step(extra_mib: int = 0):
    """A small conv net's training step; `extra_mib` more kept alive at the peak, on a line of its own."""
    torch = pytest.importorskip("torch")  # here, not at collection: the fast tier's other tests need no torch
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10)
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    keep = torch.ones(extra_mib * MiB // 4) if extra_mib else None  # the rank's extra buffer
    loss = net(torch.randn(16, 3, 32, 32)).sum()
    loss.backward()
    opt.step()
    return keep


def _rank_profiles(monkeypatch, tmp_path, world=2, extra_on=1, extra_mib=16, run_id="job7"):
    """Each rank's profile of the same step, saved as that rank saves it."""
    paths = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
        profiler = Profiler(name="conv step", out=tmp_path, torch=True, store=False)
        with profiler:
            kept = _conv_step(extra_mib if rank == extra_on else 0)
        del kept
        paths.append(profiler.saved_path)
    return paths


def test_rank_files_carry_the_rank_and_merge_names_the_highest(monkeypatch, tmp_path):
    paths = _rank_profiles(monkeypatch, tmp_path)
    assert [p.name for p in paths] == ["conv-step.rank0.memprofile.json.gz", "conv-step.rank1.memprofile.json.gz"]
    profiles = [memprofile.load(p) for p in paths]
    assert [(p.rank, p.distributed.world_size, p.distributed.local_rank, p.distributed.run_id) for p in profiles] == [
        (0, 2, 0, "job7"),
        (1, 2, 1, "job7"),
    ]
    merged = memprofile.merge(tmp_path)
    assert isinstance(merged, MergedProfile) and merged.merged is not None
    info = merged.merged
    assert (info.world_size, info.highest, info.lowest, info.missing) == (2, 1, 0, [])
    assert [r.peak_bytes for r in info.ranks] == [p.peak_bytes for p in profiles]
    assert info.imbalance == pytest.approx(
        profiles[1].peak_bytes / statistics.fmean([p.peak_bytes for p in profiles]) - 1
    )
    assert merged.highest_rank.rank == 1 and [p.rank for p in merged.ranks] == [0, 1]
    assert (merged.world_size, merged.imbalance, merged.skew_s) == (2, info.imbalance, info.skew_s)
    # The merged body is rank 1's detail
    assert merged.peak_bytes == profiles[1].peak_bytes and merged.rank is None
    # What rank 1 holds that rank 0 does not: the 16 MiB buffer, as a tensor and as bytes no layer made
    tensors = [e for e in info.excess if e.kind == "tensor"]
    assert tensors and tensors[0].bytes - tensors[0].others_bytes == 16 * MiB, info.excess
    assert "aten::ones" in tensors[0].name
    # Same figures per rank as each rank's own profile: parameters, gradients, momentum
    for summary, own in zip(info.ranks, profiles, strict=True):
        assert summary.by_category == own.peak.by_category
    assert profiles[0].peak.by_category["parameter"] == profiles[1].peak.by_category["parameter"]
    # One time axis: rank 1 started after rank 0, by their wall clocks
    offset = profiles[1].distributed.started_unix_s - profiles[0].distributed.started_unix_s
    assert info.ranks[1].offset_s == pytest.approx(offset) and info.ranks[0].offset_s == 0
    assert info.ranks[1].t[0] >= offset - 1e-6 and info.skew_s == pytest.approx(offset)
    assert memprofile.last() is merged  # listed like any profile (the panel's list)


def test_merged_profile_saves_loads_and_renders(monkeypatch, tmp_path):
    _rank_profiles(monkeypatch, tmp_path)
    merged = merge_only(tmp_path)
    saved = merged.save(tmp_path / "merged.json.gz")
    back = memprofile.load(saved)
    assert isinstance(back, MergedProfile) and back.merged == merged.merged
    assert back.highest_rank.rank == 1 and back.ranks[0].rank == 0  # read again from the rank files
    text = render_text(back)
    assert "rank 1 peaks highest" in text and "rank 1 holds at its peak beyond the typical rank" in text
    html = render_report(back)
    assert "Ranks (2)" in html and "rank 1 peaks highest" in html
    assert html.count("mp-ranks-table") == 1  # the tables in the Ranks tab only, the headline above
    from memprofile.render.html import render_fragment

    assert "mp-ranks-table" in render_fragment(back)  # the static card (no views) has them


def test_a_missing_rank_is_said_and_bad_sets_are_refused(monkeypatch, tmp_path):
    paths = _rank_profiles(monkeypatch, tmp_path, world=3, extra_on=2, extra_mib=4)
    paths[1].unlink()  # rank 1 died before it could write
    merged = merge_only(tmp_path)
    assert merged.merged.missing == [1] and merged.merged.highest == 2
    assert any(n.code == "missing_ranks" and "rank(s) 1" in n.message for n in merged.warnings)
    with pytest.raises(ProfileFormatError, match="rank 0 appears twice"):
        merge_only([paths[0], paths[0]])
    other = memprofile.load(paths[2])
    other.distributed = dataclasses.replace(other.distributed, world_size=4, run_id="job7")
    with pytest.raises(ProfileFormatError, match="different sizes"):
        merge_only([paths[0], other])
    lone = memprofile.load(paths[0])
    lone.distributed = None
    with pytest.raises(ProfileFormatError, match="not one rank of a distributed job"):
        merge_only([lone])
    with pytest.raises(ProfileFormatError, match="already a merged profile"):
        merge_only([merged])
    # A folder with two profiles' rank files must be narrowed to one
    (tmp_path / "other.rank0.memprofile.json.gz").write_bytes(paths[0].read_bytes())
    with pytest.raises(ProfileFormatError, match="several profiles"):
        merge_only(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProfileFormatError, match="no rank profiles"):
        merge_only(empty)


def test_reduced_timelines_keep_every_stretch_peak():
    t = [i * 0.001 for i in range(10_000)]
    live = [i % 97 for i in range(10_000)]
    live[6_543] = 10**9
    rt, rv = reduce_points(t, live, limit=240)
    assert len(rt) == 240 and max(rv) == 10**9 and rt[rv.index(10**9)] == t[6_543]
    assert rt == sorted(rt)


@pytest.mark.slow
def test_the_recorded_v100_ddp_rank_merges_with_a_synthetic_rank_0(tmp_path):
    """The 2-GPU DDP trace (rank 1 of 2, nccl) imported, beside a rank 0 made from it:
    the same run with 512 MiB less held at the peak, started 20 ms earlier."""
    rank1 = memprofile.import_trace(V100_DDP)
    assert rank1.distributed == RankInfo(
        rank=1, world_size=2, backend="nccl", started_unix_s=rank1.distributed.started_unix_s
    )
    rank0 = memprofile.Profile.from_json(rank1.to_json())
    rank0.distributed = dataclasses.replace(
        rank1.distributed, rank=0, started_unix_s=rank1.distributed.started_unix_s - 0.020
    )
    less = 512 * MiB
    for d in rank0.devices:
        if d.name == "cuda:1":
            d.peak_bytes -= less
    tl = rank0.timeline("cuda:1")
    tl.live_bytes = [max(0, v - less) for v in tl.live_bytes]
    rank0.peak.bytes -= less
    rank0.peak.by_category["activation"] = rank0.peak.by_category.get("activation", 0) - less
    rank0.save(tmp_path / "bert.rank0.memprofile.json.gz")
    rank1.save(tmp_path / "bert.rank1.memprofile.json.gz")
    merged = memprofile.merge(tmp_path)
    info = merged.merged
    assert (info.highest, info.lowest, info.backend, info.world_size) == (1, 0, "nccl", 2)
    assert info.ranks[1].peak_bytes == 6_629_508_096 and info.ranks[1].peak_device == "cuda:1"
    assert info.ranks[1].peak_bytes - info.ranks[0].peak_bytes == less
    assert info.ranks[1].offset_s == pytest.approx(0.020, abs=1e-6) and info.ranks[0].offset_s == 0
    assert any(
        e.kind == "category" and e.name == "activation" and e.bytes - e.others_bytes == less for e in info.excess
    ), info.excess
    assert [tl.device for tl in info.timelines] == ["rank 1 · cuda:1", "rank 0 · cuda:1"]
    report = tmp_path / "merged.html"
    merged.save_html(report)
    assert "rank 1 peaks highest at 6.17 GiB" in report.read_text()


def test_merged_json_stays_small_for_many_ranks(monkeypatch, tmp_path):
    """Per rank the merged profile keeps a summary (a reduced timeline), not the rank's profile."""
    paths = _rank_profiles(monkeypatch, tmp_path, world=2)
    base = memprofile.load(paths[0])
    for rank in range(2, 40):
        copy = memprofile.Profile.from_json(base.to_json())
        copy.distributed = dataclasses.replace(base.distributed, rank=rank, world_size=40)
        copy.save(tmp_path / f"conv-step.rank{rank}.memprofile.json.gz")
    for p in paths:
        one = memprofile.load(p)
        one.distributed = dataclasses.replace(one.distributed, world_size=40)
        one.save(p)
    merged = merge_only(tmp_path)
    size = len(gzip.compress(merged.to_json().encode()))
    rank_size = paths[0].stat().st_size
    assert len(merged.merged.ranks) == 40 and len(merged.merged.timelines) == 4
    assert size < 6 * rank_size, (size, rank_size)
    assert json.loads(merged.to_json())["merged"]["ranks"][39]["rank"] == 39


def _summary(rank, peak, by_line, by_category=None):
    from memprofile.model.profile import RankSummary

    return RankSummary(
        rank=rank,
        name="s",
        peak_bytes=peak,
        peak_device="cuda:0",
        duration_s=1.0,
        by_line=by_line,
        by_category=by_category or {"activation": peak},
    )


def test_excess_is_what_the_peak_margin_supports():
    from memprofile.analysis.merge import excess

    gib = 1 << 30
    # Equal peaks, the same 8 MiB bucket made on different lines (ranks peaked in different steps): nothing
    same = [
        _summary(0, 4 * gib, {126: 8 * MiB, 10: 4 * gib - 8 * MiB}),
        _summary(1, 4 * gib, {137: 8 * MiB, 10: 4 * gib - 8 * MiB}),
    ]
    assert excess(same[0], same[1:]) == []
    # Rank 1 holds 1 GiB more on line 88; the shifted bucket is not named beside it
    top = _summary(1, 5 * gib, {88: gib, 126: 8 * MiB, 10: 4 * gib - 8 * MiB}, {"activation": 4 * gib, "other": gib})
    others = [_summary(r, 4 * gib, {137: 8 * MiB, 10: 4 * gib - 8 * MiB}) for r in (0, 2, 3)]
    found = excess(top, others)
    assert [(e.kind, e.name, e.bytes - e.others_bytes) for e in found] == [
        ("line", "line 88", gib),
        ("category", "other", gib),
    ]
    # A real excess larger than the margin (rank holds less elsewhere) is still named first
    partly = _summary(1, 4 * gib + 256 * MiB, {88: gib, 10: 3 * gib + 256 * MiB})
    assert [e.name for e in excess(partly, others) if e.kind == "line"] == ["line 88"]


def test_equal_peaks_name_the_lowest_rank_whatever_the_order(monkeypatch, tmp_path):
    paths = _rank_profiles(monkeypatch, tmp_path, world=2, extra_mib=0)
    profiles = [memprofile.load(p) for p in paths]
    profiles[0].devices = profiles[1].devices  # the same peak on both ranks
    for order in (profiles, profiles[::-1]):
        merged = merge_only(order)
        assert merged.merged.highest == 0 and merged.merged.lowest == 1 and merged.highest_rank.rank == 0
        assert merged.rank is None and merged.merged.excess == []


def test_the_full_timelines_kept_are_the_highest_ranks_by_the_same_order(monkeypatch, tmp_path):
    """Six ranks of equal peak: the highest is rank 0, and its full timeline is among the four kept."""
    (path,) = _rank_profiles(monkeypatch, tmp_path, world=1, extra_mib=0)
    base = memprofile.load(path)
    ranks = []
    for rank in range(6):
        copy = memprofile.Profile.from_json(base.to_json())
        copy.distributed = dataclasses.replace(base.distributed, rank=rank, world_size=6)
        ranks.append(copy)
    for order in (ranks, ranks[::-1]):
        info = merge_only(order).merged
        assert info.highest == 0
        assert [tl.device.split(" · ")[0] for tl in info.timelines] == ["rank 0", "rank 1", "rank 2", "rank 3"]
