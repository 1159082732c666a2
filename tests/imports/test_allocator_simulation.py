"""The CUDA caching-allocator simulation (analysis/predict/allocator.py): each rule of
c10/cuda/CUDACachingAllocator.cpp on a hand-made sequence, and the recorded GPU traces
(tests/fixtures/gpu) replayed through it."""

from __future__ import annotations

import functools
import gzip
import json
import random
import time

import pytest

from memprofile.analysis.predict.allocator import (
    AllocatorRun,
    allocation_size,
    log_events,
    round_size,
    simulate,
    simulate_log,
)
from memprofile.analysis.predict.devices import device_spec
from memprofile.capture.base import ALIVE, AllocationLog
from memprofile.capture.torch.trace import read_torch_trace
from tests.imports import H100, V100_DDP

KiB, MiB = 1 << 10, 1 << 20


def run(*sizes_or_frees, **kw) -> AllocatorRun:
    """Events from a compact list: an int allocates the next key; "-k" frees key k (1-based)."""
    events, n = [], 0
    for item in sizes_or_frees:
        if isinstance(item, str):
            events.append((int(item[1:]), -1))
        else:
            n += 1
            events.append((n, item))
    return simulate(events, **kw)


# -- rounding and segment sizes -------------------------------------------------------------


@pytest.mark.parametrize("request_, block", [(1, 512), (512, 512), (513, 1024), (1000, 1024), (MiB + 1, MiB + 512)])
def test_sizes_round_up_to_512_bytes(request_, block):
    assert round_size(request_) == block
    assert run(request_).allocated_peak_bytes == block


@pytest.mark.parametrize(
    "size, segment",
    [(512, 2 * MiB), (MiB, 2 * MiB), (MiB + 512, 20 * MiB), (10 * MiB - 512, 20 * MiB), (10 * MiB, 10 * MiB)],
)
def test_segment_sizes(size, segment):
    # small pool: 2 MiB; 1-10 MiB: a 20 MiB segment; from 10 MiB: rounded to 2 MiB
    assert allocation_size(size) == segment
    assert run(size).reserved_peak_bytes == segment


def test_large_requests_round_their_segment_up_to_2_mib():
    r = run(10 * MiB + 1)
    assert r.reserved_peak_bytes == 12 * MiB
    # the 2 MiB - 512 B left is more than 1 MiB: split off, so the block is the rounded request
    assert r.allocated_peak_bytes == 10 * MiB + 512


def test_a_large_block_is_not_split_for_1_mib_or_less():
    # 11 MiB + 512 B in a 12 MiB segment leaves 1 MiB - 512 B: the request gets the whole block
    r = run(11 * MiB + 512)
    assert r.allocated_peak_bytes == 12 * MiB


# -- the two pools ---------------------------------------------------------------------------


def test_small_requests_share_a_2_mib_segment():
    r = run(512 * KiB, 512 * KiB, 512 * KiB, 512 * KiB)
    assert (r.reserved_peak_bytes, r.segments) == (2 * MiB, 1)
    r = run(512 * KiB, 512 * KiB, 512 * KiB, 512 * KiB, 512)
    assert (r.reserved_peak_bytes, r.segments) == (4 * MiB, 2)


def test_small_and_large_pools_never_share_a_segment():
    # a 1 MiB request (small pool) does not go into the 20 MiB segment's free 18 MiB
    r = run(2 * MiB, MiB)
    assert (r.reserved_peak_bytes, r.segments) == (22 * MiB, 2)


def test_requests_of_1_to_10_mib_pack_into_a_20_mib_segment():
    r = run(5 * MiB, 5 * MiB, 5 * MiB, 5 * MiB)
    assert (r.reserved_peak_bytes, r.segments) == (20 * MiB, 1)
    r = run(5 * MiB, 5 * MiB, 5 * MiB, 5 * MiB, 5 * MiB)
    assert (r.reserved_peak_bytes, r.segments) == (40 * MiB, 2)


# -- reuse, best fit, split and merge --------------------------------------------------------


def test_freed_blocks_are_reused_and_segments_kept():
    r = run(100 * MiB, "-1", 100 * MiB)
    assert (r.reserved_peak_bytes, r.reserved_end_bytes, r.allocated_end_bytes) == (100 * MiB, 100 * MiB, 100 * MiB)
    # a smaller request splits the cached 100 MiB block (the rest is more than 1 MiB)
    r = run(100 * MiB, "-1", 50 * MiB, 40 * MiB)
    assert r.reserved_peak_bytes == 100 * MiB
    assert r.allocated_end_bytes == 90 * MiB


def test_best_fit_takes_the_smallest_block_that_fits():
    # cached: a 12 MiB and a 14 MiB segment. 11 MiB takes the 12 (best fit), so 13 MiB fits the 14.
    r = run(12 * MiB, 14 * MiB, "-1", "-2", 11 * MiB, 13 * MiB)
    assert r.reserved_peak_bytes == 26 * MiB
    assert r.segments == 2


def test_free_neighbours_merge_inside_a_segment():
    # three 6 MiB blocks from one 20 MiB segment; freeing the first two leaves one 12 MiB block,
    # which a 12 MiB request fits without a new segment
    r = run(6 * MiB, 6 * MiB, 6 * MiB, "-1", "-2", 12 * MiB)
    assert (r.reserved_peak_bytes, r.segments) == (20 * MiB, 1)


def test_small_pool_splits_down_to_512_bytes():
    # 1 MiB + 1 MiB - 512 B fill a 2 MiB segment but for 512 B, which a 512 B request then takes
    r = run(MiB, MiB - 512, 512)
    assert (r.reserved_peak_bytes, r.segments) == (2 * MiB, 1)
    assert r.allocated_peak_bytes == 2 * MiB


def test_events_of_size_zero_are_nothing():
    assert simulate([(1, 0), (2, 0)]) == simulate([])


def test_a_free_of_a_block_not_live_or_a_second_allocation_of_a_key_is_an_error():
    with pytest.raises(ValueError, match="not live"):
        simulate([(1, -512)])
    with pytest.raises(ValueError, match="already live"):
        simulate([(1, 512), (1, 512)])


def test_peaks_and_end_figures():
    r = run(30 * MiB, 40 * MiB, "-1", 10 * MiB)
    assert r.allocated_peak_bytes == 70 * MiB
    assert r.reserved_at_allocated_peak_bytes == 70 * MiB
    assert r.allocated_end_bytes == 50 * MiB
    assert r.reserved_end_bytes == r.reserved_peak_bytes == 70 * MiB
    assert r.allocations == 3 and not r.oom


# -- max_split_size ----------------------------------------------------------------------------


def test_max_split_size_keeps_oversize_blocks_whole():
    # without it, 30 MiB splits the cached 100 MiB block; with 40 MiB, no block that large serves it
    assert run(100 * MiB, "-1", 30 * MiB).reserved_peak_bytes == 100 * MiB
    assert run(100 * MiB, "-1", 30 * MiB, max_split_size=40 * MiB).reserved_peak_bytes == 130 * MiB
    # an oversize request takes an oversize block only within 20 MiB of its size
    assert run(100 * MiB, "-1", 85 * MiB, max_split_size=40 * MiB).reserved_peak_bytes == 100 * MiB
    assert run(100 * MiB, "-1", 60 * MiB, max_split_size=40 * MiB).reserved_peak_bytes == 160 * MiB


# -- capacity: releasing the cache, out of memory --------------------------------------------


def test_over_capacity_the_cache_is_released_before_an_oom():
    # 60 MiB cached and a 70 MiB request: 130 MiB without a limit; with 100 MiB, the cached segment goes
    assert run(60 * MiB, "-1", 70 * MiB).reserved_peak_bytes == 130 * MiB
    r = run(60 * MiB, "-1", 70 * MiB, capacity_bytes=100 * MiB)
    assert (r.reserved_peak_bytes, r.segments, r.oom) == (70 * MiB, 1, False)


def test_out_of_memory_is_recorded_and_the_run_goes_on():
    r = run(60 * MiB, 50 * MiB, "-1", 10 * MiB, capacity_bytes=100 * MiB)
    assert r.oom and r.oom_event == 1
    # the peaks say what the run would need
    assert r.allocated_peak_bytes == 110 * MiB
    assert r.reserved_peak_bytes == 110 * MiB


def test_a_split_segment_is_not_released():
    # 16 MiB does not fit the 15 MiB left in the 5 MiB block's 20 MiB segment, nor beside it in 31 MiB:
    # the segment goes back to the driver only when nothing in it is live
    assert run(5 * MiB, 16 * MiB, capacity_bytes=31 * MiB).oom
    assert not run(5 * MiB, "-1", 16 * MiB, capacity_bytes=31 * MiB).oom


# -- expandable segments ---------------------------------------------------------------------


def test_expandable_segments_grow_in_20_mib_pages():
    # 60 MiB freed, then 70 MiB: the segment grows by one page instead of a second segment
    assert run(60 * MiB, "-1", 70 * MiB).reserved_peak_bytes == 130 * MiB
    r = run(60 * MiB, "-1", 70 * MiB, expandable_segments=True)
    assert (r.reserved_peak_bytes, r.segments) == (80 * MiB, 1)
    # a request maps whole pages: 30 MiB maps 40 MiB
    assert run(30 * MiB, expandable_segments=True).reserved_peak_bytes == 40 * MiB


def test_expandable_small_pool_grows_in_2_mib_pages():
    # five 768 KiB blocks: two per 2 MiB segment (3 segments), or 3.75 MiB packed in 2 MiB pages
    assert run(*[768 * KiB] * 5).reserved_peak_bytes == 6 * MiB
    assert run(*[768 * KiB] * 5, expandable_segments=True).reserved_peak_bytes == 4 * MiB


def test_expandable_segments_split_large_blocks_down_to_512_bytes():
    r = run(11 * MiB + 512, expandable_segments=True)
    assert r.allocated_peak_bytes == 11 * MiB + 512
    assert r.reserved_peak_bytes == 20 * MiB


def test_expandable_segments_unmap_free_pages_over_capacity():
    # 60 MiB then 20 MiB mapped, the 60 MiB freed; 80 MiB more does not fit the free pages. Under a 100 MiB
    # capacity the free 60 MiB are unmapped and 80 MiB mapped after the live block.
    events = (60 * MiB, 20 * MiB, "-1", 80 * MiB)
    assert run(*events, expandable_segments=True).reserved_peak_bytes == 160 * MiB
    r = run(*events, capacity_bytes=100 * MiB, expandable_segments=True)
    assert (r.oom, r.reserved_peak_bytes, r.reserved_end_bytes, r.segments) == (False, 100 * MiB, 100 * MiB, 1)
    assert run(*events, capacity_bytes=99 * MiB, expandable_segments=True).oom


# -- the books balance on random runs -------------------------------------------------------


def _check_books(sim) -> None:
    """Every block is in one segment, neighbours touch, no two idle neighbours are left unmerged,
    the free lists agree with the blocks, and reserved, allocated and segments add up."""
    blocks = set(sim.live.values())
    for pool in (sim.large, sim.small):
        assert pool.free == sorted(pool.free)
        assert len(pool.free) + len(pool.unmapped) == len(pool.idle)
        for size, addr in pool.free:
            b = pool.idle[addr]
            assert (b.size, b.addr, b.mapped, b.allocated) == (size, addr, True, False)
        for addr in pool.unmapped:
            assert not pool.idle[addr].mapped
        blocks |= set(pool.idle.values())
    heads = [b for b in blocks if b.prev is None]
    mapped = seen = 0
    for b in heads:
        while b is not None:
            seen += 1
            mapped += b.size if b.mapped else 0
            if b.next is not None:
                assert b.next.prev is b and b.next.addr == b.addr + b.size
                assert b.allocated or b.next.allocated or b.mapped != b.next.mapped
            b = b.next
    assert seen == len(blocks)
    assert (sim.reserved, sim.allocated, sim.segments) == (
        mapped,
        sum(b.size for b in sim.live.values()),
        len(heads),
    )


@pytest.mark.parametrize("seed", range(8))
def test_random_runs_keep_the_allocators_books(seed):
    from memprofile.analysis.predict.allocator import _Allocator

    rng = random.Random(seed)
    sim = _Allocator(seed % 2 == 0, rng.choice([None, 200 * MiB, 600 * MiB]), rng.choice([None, 40 * MiB]))
    live: list[int] = []
    for n in range(1500):
        if live and rng.random() < 0.5:
            sim.free(live.pop(rng.randrange(len(live))))
        else:
            live.append(n)
            sim.malloc(n, rng.randint(1, rng.choice([MiB, 10 * MiB, 100 * MiB])))
        if n % 100 == 0:
            _check_books(sim)
    _check_books(sim)


# -- AllocationLog replay --------------------------------------------------------------------


def _log(rows):
    """rows: (size, t_alloc, t_free, pre_existing)."""
    log = AllocationLog(device="cuda:0", source="c10")
    for size, t_alloc, t_free, pre in rows:
        i = log.add(size, t_alloc, -1 if pre else t_alloc, pre_existing=pre)
        log.t_free[i] = log.seq_free[i] = t_free
    return log


def test_log_events_seed_what_was_live_first_then_replay_in_time_order():
    log = _log(
        [
            (2 * MiB, 2.0, ALIVE, False),  # row 0, allocated at t=2
            (MiB, 0.0, 3.0, True),  # row 1, from before, freed at t=3
            (4 * MiB, 0.0, ALIVE, True),  # row 2, from before, never freed
            (512, 1.0, 2.0, False),  # row 3, freed at t=2: before row 0's allocation at t=2
            (8 * MiB, 0.0, 1.5, True),  # row 4, from before, freed at t=1.5
        ]
    )
    assert list(log_events(log)) == [
        (2, 4 * MiB),  # kept ones first
        (4, 8 * MiB),  # then the freed ones, in the order of their frees
        (1, MiB),
        (3, 512),
        (4, -8 * MiB),
        (3, -512),  # a free before an allocation at the same time
        (0, 2 * MiB),
        (1, -MiB),
    ]
    r = simulate_log(log)
    assert r.allocated_peak_bytes == 4 * MiB + 8 * MiB + MiB + 512


def test_a_seed_stands_for_the_blocks_never_freed_and_the_rest_stays_one_block():
    # 12 MiB live before the log, never freed: known to be a 1 MiB and a 3 MiB tensor (and 8 MiB unknown)
    log = _log([(12 * MiB, 0.0, ALIVE, True), (512, 1.0, 2.0, False)])
    assert list(log_events(log, seed=[MiB, 3 * MiB])) == [
        (("seed", 0), MiB),
        (("seed", 1), 3 * MiB),
        (("seed", "rest"), 8 * MiB),
        (1, 512),
        (1, -512),
    ]
    # the 1 MiB tensor takes a small-pool segment, the 3 MiB one a 20 MiB segment, whose 17 MiB left hold
    # the 8 MiB rest; one 12 MiB block takes a 12 MiB segment
    assert simulate_log(log, seed=[MiB, 3 * MiB]).reserved_peak_bytes == 2 * MiB + 20 * MiB
    assert simulate_log(log).reserved_peak_bytes == 12 * MiB + 2 * MiB


# -- the recorded GPU traces -----------------------------------------------------------------

#: The traces' own maxima (PROVENANCE.md).
TRACES = {
    "h100": (H100, "cuda:0", 101_305_344, 121_634_816),
    "v100_ddp_rank1": (V100_DDP, "cuda:1", 6_629_508_096, 12_782_141_440),
}


#: Reading the V100 DDP trace (216,092 events) takes seconds: the full tier's.
NAMES = [pytest.param("h100"), pytest.param("v100_ddp_rank1", marks=pytest.mark.slow)]


@functools.cache
def _trace(name: str):
    path, device, _, _ = TRACES[name]
    log = next(lg for lg in read_torch_trace(path).captures[0].allocations if lg.device == device)
    with gzip.open(path, "rb") as f:
        args = [
            e["args"]
            for e in json.load(f)["traceEvents"]
            if e.get("name") == "[memory]" and e["args"].get("Device Type") == 1
        ]
    return log, args


@pytest.mark.parametrize("name", NAMES)
def test_trace_allocated_peak_is_the_traces_total_allocated(name):
    # GIVEN a trace's CUDA events through memprofile's own reader, what was live before seeded first
    log, args = _trace(name)
    real = max(a["Total Allocated"] for a in args)
    assert real == TRACES[name][2]
    # WHEN replayed through the simulation
    run_ = simulate_log(log)
    expandable = simulate_log(log, expandable_segments=True)
    # THEN the allocated peak is the trace's: to the byte where every block splits to size (expandable);
    # without, a large block is not split for 1 MiB or less, and the simulation's blocks are not always the
    # real allocator's: the seeded unknown bytes' remainder (H100: 913,920 B), another block's (V100: 0.27 %)
    assert expandable.allocated_peak_bytes == real
    assert real <= run_.allocated_peak_bytes <= real * 1.01
    assert args[-1]["Total Allocated"] <= run_.allocated_end_bytes <= args[-1]["Total Allocated"] + MiB


@pytest.mark.parametrize("name", NAMES)
def test_trace_reserved_peak_is_what_the_window_needs_at_least(name):
    # The traces start mid-run with their reserved memory already at its peak (Total Reserved never
    # changes in either file): the simulation, which knows only the window, cannot exceed it, and must
    # hold at least the window's allocated peak in whole segments.
    log, args = _trace(name)
    real = max(a["Total Reserved"] for a in args)
    assert real == TRACES[name][3] == args[0]["Total Reserved"] == min(a["Total Reserved"] for a in args)
    r = simulate_log(log)
    assert TRACES[name][2] <= r.reserved_peak_bytes <= real


def bert_parameter_bytes(vocab=30522, hidden=512, layers=4, intermediate=2048, positions=512, dtype_bytes=2):
    """A transformers BertLMHeadModel's parameters and buffers, in bytes, in the order `.to()`
    moves them (children before their own parameters; the decoder's weight is the word
    embeddings'). Checked against transformers 4.57 on the meta device."""
    h, b = hidden, dtype_bytes
    sizes = [vocab * h * b, positions * h * b, 2 * h * b, h * b, h * b, positions * 8, positions * 8]
    for _ in range(layers):
        for _ in range(4):  # query, key, value, attention.output.dense
            sizes += [h * h * b, h * b]
        sizes += [h * b, h * b]  # attention.output.LayerNorm
        sizes += [intermediate * h * b, intermediate * b, h * intermediate * b, h * b, h * b, h * b]
    sizes += [h * h * b, h * b, h * b, h * b, vocab * b]  # cls.predictions: transform, LayerNorm, bias
    return sizes


def test_h100_trace_reserved_peak_from_the_models_own_blocks():
    # GIVEN the H100 trace and what its PROVENANCE says was live: the bf16 weights of
    # gaunernst/bert-small-uncased (4 layers, hidden 512, intermediate 2048, vocabulary 30522) and,
    # from the device table, cuBLAS's workspace on this sm90 device (torch allocates it at the first matmul)
    log, args = _trace("h100")
    with gzip.open(H100, "rb") as f:
        props = json.load(f)["deviceProperties"][0]
    spec = device_spec(props["name"])
    assert spec.compute_capability == (props["computeMajor"], props["computeMinor"]) == (9, 0)
    weights = bert_parameter_bytes()
    seed = [*weights, spec.workspace_bytes]
    held = args[0]["Total Allocated"] - args[0]["Bytes"]
    # (they account for all but 207,360 B of what the allocator held before the trace's first event)
    assert 0 < held - sum(round_size(s) for s in seed) < 256 * KiB
    # WHEN the trace is replayed on them
    r = simulate_log(log, seed=seed)
    # THEN the reserved peak is the trace's Total Reserved within 2 % (to the byte, in fact), in any order
    # the weights were made
    real = max(a["Total Reserved"] for a in args)
    assert r.reserved_peak_bytes == pytest.approx(real, rel=0.02)
    assert r.reserved_peak_bytes == real
    shuffled = weights[:]
    random.Random(1).shuffle(shuffled)
    assert simulate_log(log, seed=[*shuffled, spec.workspace_bytes]).reserved_peak_bytes == real
    # and the allocated peak within the word embeddings' unsplit 202,752 B
    assert 0 <= r.allocated_peak_bytes - max(a["Total Allocated"] for a in args) <= 256 * KiB


def test_h100_trace_with_one_block_for_what_was_live_reserves_less():
    # Without knowing the blocks, one block packs tighter than the model's tensors did: 3.4 % low.
    log, _ = _trace("h100")
    r = simulate_log(log)
    assert (r.allocated_peak_bytes, r.reserved_peak_bytes) == (102_219_264, 117_440_512)
    assert simulate_log(log, expandable_segments=True).reserved_peak_bytes == 109_051_904


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the DDP rank's reserved memory was made before its window: 12,782,141,440 B from the window's first "
    "event on, twice what the window needs (6,866,075,648 B simulated, -46 %), also with gradient-sized blocks "
    "seeded; blocks NCCL's stream used are not reused until it is done (not modelled); docs/will_it_fit.md",
)
def test_v100_ddp_trace_reserved_peak_within_2_percent():
    log, args = _trace("v100_ddp_rank1")
    real = max(a["Total Reserved"] for a in args)
    assert simulate_log(log).reserved_peak_bytes == pytest.approx(real, rel=0.02)


# -- speed -----------------------------------------------------------------------------------


def _random_events(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """n alloc/free events: small, 1-10 MiB and large requests, up to 2,000 live at once."""
    rng = random.Random(seed)
    live: list[tuple[int, int]] = []
    out: list[tuple[int, int]] = []
    key = 0
    while len(out) < n:
        if live and (rng.random() < 0.5 or len(live) > 2000):
            k, size = live.pop(rng.randrange(len(live)) if rng.random() < 0.3 else -1)
            out.append((k, -size))
        else:
            bound = rng.choice((MiB, 10 * MiB, 200 * MiB))
            key += 1
            size = rng.randint(1, bound)
            live.append((key, size))
            out.append((key, size))
    return out


@pytest.mark.slow
def test_a_million_events_take_seconds_not_minutes():
    events = _random_events(1_000_000)
    start = time.perf_counter()
    simulate(events)
    took = time.perf_counter() - start
    assert took < 15, f"1e6 events took {took:.1f} s"
