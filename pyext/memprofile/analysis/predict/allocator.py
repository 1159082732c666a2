"""A simulation of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp,
the 2.x line): what a sequence of allocations and frees would reserve from the driver.

Modelled as the source does it, on one device and one stream:
- sizes round up to 512 B (kMinBlockSize); requests up to 1 MiB (kSmallSize) use the
  small pool, the rest the large pool, and the two never share a segment;
- a request no cached block fits gets a new segment: 2 MiB (kSmallBuffer) for the small
  pool, 20 MiB (kLargeBuffer) for requests under 10 MiB (kMinLargeAlloc), else the
  request rounded up to 2 MiB (kRoundLarge) (get_allocation_size);
- best fit over the pool's cached free blocks, smallest size first, then lowest address
  (get_free_block); the block is split when the rest is at least 512 B (small pool, or
  any pool with expandable segments) or more than 1 MiB (large pool) (should_split);
  `max_split_size` forbids splitting blocks that large and handing them to smaller
  requests, and lets a request take an oversize block only within 20 MiB of its size;
- a freed block merges with free neighbours of its segment (free_block, try_merge_blocks);
  segments stay reserved (no empty_cache) unless `capacity_bytes` would be exceeded: then
  cached blocks are released (release_available_cached_blocks with max_split_size, then
  release_cached_blocks: every unsplit cached segment) and the allocation retried; if it
  still does not fit, that is an out-of-memory error. The simulation records it (`oom`,
  `oom_event`) and makes the allocation anyway, past the capacity, so the peaks say what
  the run would need;
- `expandable_segments=True`: one growing segment per pool, mapped in 2 MiB pages (small
  pool) or 20 MiB pages (large pool) as far as a request needs past the free block at its
  end (find_expandable_block, map_block); any pool then splits down to 512 B; releasing
  unmaps the whole free pages of cached blocks (unmap_block).

Not modelled: several streams (a block freed on one stream is not reused by another until
its events complete), CUDA graph pools, `roundup_power2_divisions`,
`garbage_collection_threshold`, the driver's own fragmentation (cudaMalloc failing below the
capacity), and expandable segments' bounded address space (1 1/8 of the device).

Events are `(key, size)`: size > 0 allocates `size` bytes as `key`; size < 0 frees the block
of `key` (its magnitude is not read, so a kineto trace's negative `Bytes` serves); size 0 is
nothing (torch hands out no block for an empty tensor). Freeing a key that is not live, or
allocating one that is, is a ValueError.

`simulate_log` replays an AllocationLog. A log that starts mid-run (a recorded trace; a cell
after others) has pre-existing rows: what was live before its first event. They are seeded
as allocations before the first event: first those the run never frees (model weights,
optimizer state, and the trace reader's one row for bytes no event names: the allocator's
`Total Allocated` before the first event), then those it frees, in the order it frees them.
Long-lived tensors were made first (the model is loaded before a step runs), and the
blocks freed early in the run are the previous step's last outputs. Where the caller knows
what the never-freed bytes were (the model's parameters and buffers in the order `.to()`
moves them, cuBLAS's workspace: devices.py), `seed` gives those blocks instead, and what they
do not cover stays one block. One block for many tensors packs tighter than they did (each
tensor of up to 1 MiB in the small pool's 2 MiB segments, of 1-10 MiB in 20 MiB segments):
the reserved peak then comes out low (the H100 trace: 3.4 %; with bert-small's weights and
the sm90 cuBLAS workspace seeded, to the byte).
The segments that held freed temporaries before the log began are not known either: the
simulation reserves what the logged events need on top of the seeded blocks, as if the run
started there; a trace whose reserved memory grew before its window (an earlier, larger
step; blocks held for another stream) reserved more than its window shows.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

from memprofile.capture.base import AllocationLog

MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 1 << 20  # kSmallSize: the largest request of the small pool
SMALL_BUFFER = 2 << 20  # kSmallBuffer: a small-pool segment, and its expandable page
LARGE_BUFFER = 20 << 20  # kLargeBuffer: a 1-10 MiB request's segment, and a large expandable page
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc: from here a request gets a segment of its own size
ROUND_LARGE = 2 << 20  # kRoundLarge
#: Address space of one expandable segment: never the limit here (torch reserves 1 1/8 of the device).
_EXPANDABLE_SPACE = 1 << 50


@dataclass(frozen=True)
class AllocatorRun:
    """What the caching allocator held over a simulated run, in bytes."""

    #: The highest sum of handed-out blocks (torch's allocated_bytes peak).
    allocated_peak_bytes: int
    #: The highest memory taken from the driver (torch's reserved_bytes peak).
    reserved_peak_bytes: int
    allocated_end_bytes: int
    reserved_end_bytes: int
    #: Reserved when the allocated peak was reached.
    reserved_at_allocated_peak_bytes: int
    #: Segments held at the end: cudaMalloc'd ones, or expandable ones (one per pool in use).
    segments: int
    #: An allocation did not fit in capacity_bytes, even after releasing the cache.
    oom: bool
    #: Index (in the events) of the first allocation that did not fit; None: none.
    oom_event: int | None
    #: Allocations simulated.
    allocations: int


def round_size(size: int) -> int:
    """The block size torch's allocator gives a request (round_size)."""
    return MIN_BLOCK if size < MIN_BLOCK else -(-size // MIN_BLOCK) * MIN_BLOCK


def allocation_size(size: int) -> int:
    """The segment cudaMalloc'd for a rounded request no cached block fits (get_allocation_size)."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


def simulate(
    events: Iterable[tuple[Hashable, int]],
    *,
    expandable_segments: bool = False,
    capacity_bytes: int | None = None,
    max_split_size: int | None = None,
) -> AllocatorRun:
    """Replay `events` ((key, size): size > 0 allocates, size < 0 frees `key`) through the
    caching allocator. `capacity_bytes`: what it may reserve, None for no limit (on a device:
    its memory less the CUDA context and anything else on it, devices.py); `max_split_size`:
    PYTORCH_CUDA_ALLOC_CONF's max_split_size_mb, in bytes."""
    sim = _Allocator(expandable_segments, capacity_bytes, max_split_size)
    allocated_peak = reserved_at_peak = allocations = 0
    oom_event = None
    for n, (key, size) in enumerate(events):
        if size > 0:
            allocations += 1
            if not sim.malloc(key, size) and oom_event is None:
                oom_event = n
            if sim.allocated > allocated_peak:
                allocated_peak, reserved_at_peak = sim.allocated, sim.reserved
        elif size < 0:
            sim.free(key)
    return AllocatorRun(
        allocated_peak_bytes=allocated_peak,
        reserved_peak_bytes=sim.reserved_peak,
        allocated_end_bytes=sim.allocated,
        reserved_end_bytes=sim.reserved,
        reserved_at_allocated_peak_bytes=reserved_at_peak,
        segments=sim.segments,
        oom=oom_event is not None,
        oom_event=oom_event,
        allocations=allocations,
    )


def simulate_log(
    log: AllocationLog,
    *,
    expandable_segments: bool = False,
    capacity_bytes: int | None = None,
    max_split_size: int | None = None,
    seed: Iterable[int] | None = None,
) -> AllocatorRun:
    """`simulate` over an AllocationLog's rows: its pre-existing rows seeded first (see
    the module's docstring; `seed`: the sizes of the blocks its never-freed ones held, in the
    order they were made), then its events in analysis/replay.py's order."""
    return simulate(
        log_events(log, seed),
        expandable_segments=expandable_segments,
        capacity_bytes=capacity_bytes,
        max_split_size=max_split_size,
    )


def log_events(log: AllocationLog, seed: Iterable[int] | None = None) -> Iterator[tuple[Hashable, int]]:
    """(key, +size) and (key, -size) events of a log (its rows' indices are the keys):
    pre-existing rows first (never freed, or `seed` and one block for the rest of their bytes;
    then those freed, in the order of their frees), then the run's events ordered as
    analysis/replay.py orders them (time, recorded sequence, frees first, row)."""
    pre = [i for i in range(len(log)) if log.pre_existing[i]]
    kept = [i for i in pre if math.isinf(log.t_free[i])]
    freed = sorted((i for i in pre if not math.isinf(log.t_free[i])), key=lambda i: (log.t_free[i], log.seq_free[i]))
    if seed is None:
        for i in kept:
            yield i, log.size[i]
    else:
        rest = sum(log.size[i] for i in kept)
        for n, size in enumerate(seed):
            yield ("seed", n), size
            rest -= round_size(size)
        if rest > 0:
            yield ("seed", "rest"), rest
    for i in freed:
        yield i, log.size[i]
    order: list[tuple[float, float, int, int]] = []
    for i in range(len(log)):
        if not log.pre_existing[i]:
            order.append((log.t_alloc[i], log.seq_alloc[i], 1, i))
        if not math.isinf(log.t_free[i]):
            order.append((log.t_free[i], log.seq_free[i], 0, i))
    order.sort()
    sizes = log.size
    for _, _, is_alloc, i in order:
        yield i, sizes[i] if is_alloc else -sizes[i]


class _Block:
    """A range of a segment: handed out, cached free, or (expandable) not mapped."""

    __slots__ = ("addr", "size", "pool", "prev", "next", "allocated", "mapped", "page")

    def __init__(self, addr: int, size: int, pool: _Pool, page: int = 0, mapped: bool = True) -> None:
        self.addr = addr
        self.size = size
        self.pool = pool
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.allocated = False
        self.mapped = mapped
        #: The page of its expandable segment (whose base is page-aligned); 0: a cudaMalloc'd segment.
        self.page = page

    def splice(self, before: _Block | None, after: _Block | None) -> None:
        """Put this block between `before` and `after` (neighbours in a segment)."""
        self.prev, self.next = before, after
        if before is not None:
            before.next = self
        if after is not None:
            after.prev = self


class _Pool:
    """One pool's cached blocks: free ones by (size, address), unmapped ones by address."""

    __slots__ = ("small", "free", "unmapped", "idle")

    def __init__(self, small: bool) -> None:
        self.small = small
        self.free: list[tuple[int, int]] = []  # (size, addr), sorted: best fit is a bisect
        self.unmapped: list[int] = []  # addr, sorted
        self.idle: dict[int, _Block] = {}  # addr -> a block in `free` or `unmapped`

    def put(self, b: _Block) -> None:
        insort(self.free, (b.size, b.addr)) if b.mapped else insort(self.unmapped, b.addr)
        self.idle[b.addr] = b

    def take(self, b: _Block) -> None:
        if b.mapped:
            del self.free[bisect_left(self.free, (b.size, b.addr))]
        else:
            del self.unmapped[bisect_left(self.unmapped, b.addr)]
        del self.idle[b.addr]


def _expandable_size(b: _Block) -> int:
    """A free block's size counting the unmapped space after it (get_free_block's best fit)."""
    after = b.next
    return b.size + (after.size if after is not None and not after.mapped else 0)


class _Allocator:
    """DeviceCachingAllocator's state for one device and one stream."""

    def __init__(self, expandable: bool, capacity: int | None, max_split_size: int | None) -> None:
        self.expandable = expandable
        self.capacity = capacity
        self.max_split = max_split_size if max_split_size is not None else math.inf
        self.large, self.small = _Pool(False), _Pool(True)
        self.live: dict[Hashable, _Block] = {}
        self.allocated = self.reserved = self.reserved_peak = self.segments = 0
        self._next_addr = 1 << 40  # a fake address space: segments never overlap

    # -- malloc ---------------------------------------------------------------------------

    def malloc(self, key: Hashable, request: int) -> bool:
        """Allocate `request` bytes as `key`; False when it did not fit (made anyway)."""
        if key in self.live:
            raise ValueError(f"allocation of {key!r}, which is already live")
        size = round_size(request)
        pool = self.small if size <= SMALL_SIZE else self.large
        fits = True
        block = self._free_block(pool, size)
        if block is None:
            block = self._new_block(pool, size, False)
            if block is None and self.max_split != math.inf and self._release_available(pool, size):
                block = self._new_block(pool, size, False)
            if block is None:
                self._release_cached()
                block = self._new_block(pool, size, False)
            if block is None:
                fits = False
                block = self._new_block(pool, size, True)
                assert block is not None
        rest = block.size - size
        if (rest >= MIN_BLOCK) if (pool.small or self.expandable) else (size < self.max_split and rest > SMALL_SIZE):
            head = _Block(block.addr, size, pool, block.page)
            head.splice(block.prev, block)
            block.addr += size
            block.size = rest
            pool.put(block)
            block = head
        block.allocated = True
        self.allocated += block.size
        self.live[key] = block
        return fits

    def _free_block(self, pool: _Pool, size: int) -> _Block | None:
        """The best-fitting cached block, taken out of the pool (get_free_block)."""
        free = pool.free
        i = bisect_left(free, (size, 0))
        if i == len(free):
            return None
        if self.expandable:
            # Best fit by the size a block can grow to: a block before unmapped space is a last resort.
            grow = _expandable_size(pool.idle[free[i][1]])
            for j in range(i + 1, len(free)):
                nxt = _expandable_size(pool.idle[free[j][1]])
                if nxt >= grow:
                    break
                i, grow = j, nxt
        found = free[i][0]
        if size < self.max_split <= found:
            return None  # no oversize block for a smaller request
        if size >= self.max_split and found >= size + LARGE_BUFFER:
            return None  # an oversize block only within 20 MiB of the request
        block = pool.idle[free[i][1]]
        pool.take(block)
        return block

    def _new_block(self, pool: _Pool, size: int, force: bool) -> _Block | None:
        """Memory from the driver for `size` (alloc_block); None when over the capacity,
        unless `force`."""
        if self.expandable:
            return self._expand(pool, size, force)
        grant = allocation_size(size)
        if not force and self.capacity is not None and self.reserved + grant > self.capacity:
            return None
        block = _Block(self._next_addr, grant, pool)
        self._next_addr += grant
        self.segments += 1
        self._reserve(grant)
        return block

    def _reserve(self, size: int) -> None:
        self.reserved += size
        if self.reserved > self.reserved_peak:
            self.reserved_peak = self.reserved

    # -- free -----------------------------------------------------------------------------

    def free(self, key: Hashable) -> None:
        block = self.live.pop(key, None)
        if block is None:
            raise ValueError(f"free of {key!r}, which is not live")
        block.allocated = False
        self.allocated -= block.size
        pool = block.pool
        self._merge(pool, block, block.prev)
        self._merge(pool, block, block.next)
        pool.put(block)

    @staticmethod
    def _merge(pool: _Pool, dst: _Block, src: _Block | None) -> None:
        """`dst` takes in its neighbour `src` if that is idle alike (try_merge_blocks)."""
        if src is None or src.allocated or src.mapped != dst.mapped:
            return
        pool.take(src)
        if src is dst.prev:
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev is not None:
                dst.prev.next = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size

    # -- releasing the cache --------------------------------------------------------------

    def _release_available(self, pool: _Pool, size: int) -> bool:
        """Free oversize cached segments, only enough for `size` (release_available_cached_blocks)."""
        want = max(size, self.max_split)
        free = pool.free
        i = bisect_left(free, (want, 0))
        if i < len(free):
            return self._release(pool, pool.idle[free[i][1]])
        released = 0
        for s, addr in reversed(list(free)):
            if released >= want or s < self.max_split:
                break
            if self._release(pool, pool.idle[addr]):
                released += s
        return released >= want

    def _release_cached(self) -> None:
        """Every cached segment that is wholly free goes back to the driver (release_cached_blocks)."""
        for pool in (self.large, self.small):
            for block in [pool.idle[addr] for _, addr in pool.free]:
                if self.expandable:
                    self._unmap(pool, block)
                else:
                    self._release(pool, block)

    def _release(self, pool: _Pool, block: _Block) -> bool:
        """cudaFree a free segment (release_block); False when it is split (part in use)."""
        if block.prev is not None or block.next is not None:
            return False
        pool.take(block)
        self.reserved -= block.size
        self.segments -= 1
        return True

    # -- expandable segments --------------------------------------------------------------

    def _expand(self, pool: _Pool, size: int, force: bool) -> _Block | None:
        """Map pages until a free range of `size` exists (try_allocate_expandable_block)."""
        block = self._expandable_candidate(pool, size)
        if not block.mapped and not self._map(pool, block, min(block.size, size), force):
            return None
        while block.size < size:
            after = block.next
            assert after is not None and not after.mapped
            if not self._map(pool, after, min(size - block.size, after.size), force):
                return None
            block = after  # it took in the free block before it
        pool.take(block)
        return block

    def _expandable_candidate(self, pool: _Pool, size: int) -> _Block:
        """The lowest-addressed free-or-unmapped run of `size` bytes, or a new segment
        (find_expandable_block)."""
        for addr in pool.unmapped:
            block = pool.idle[addr]
            if block.prev is not None and not block.prev.allocated:
                block = block.prev
            room = 0
            b: _Block | None = block
            while room < size and b is not None and not b.allocated:
                room += b.size
                b = b.next
            if room >= size:
                return block
        page = SMALL_BUFFER if pool.small else LARGE_BUFFER
        self._next_addr = -(-self._next_addr // page) * page
        block = _Block(self._next_addr, _EXPANDABLE_SPACE, pool, page, mapped=False)
        self._next_addr += _EXPANDABLE_SPACE
        self.segments += 1
        pool.put(block)
        return block

    def _map(self, pool: _Pool, block: _Block, size: int, force: bool) -> bool:
        """Back the first `size` bytes of an unmapped block with whole pages (map_block)."""
        page = block.page
        mapped = -(-size // page) * page
        if not force and self.capacity is not None and self.reserved + mapped > self.capacity:
            return False
        pool.take(block)
        block.mapped = True
        if mapped < block.size:
            rest = _Block(block.addr + mapped, block.size - mapped, pool, page, mapped=False)
            rest.splice(block, block.next)
            pool.put(rest)
            block.size = mapped
        self._merge(pool, block, block.prev)
        self._merge(pool, block, block.next)
        pool.put(block)
        self._reserve(mapped)
        return True

    def _unmap(self, pool: _Pool, block: _Block) -> None:
        """Give back the whole pages inside a free block (unmap_block), and the segment
        when nothing of it stays mapped (release_expandable_segment)."""
        page = block.page
        begin = -(-block.addr // page) * page
        end = (block.addr + block.size) // page * page
        if begin >= end:
            return
        pool.take(block)
        if begin > block.addr:
            before = _Block(block.addr, begin - block.addr, pool, page)
            before.splice(block.prev, block)
            pool.put(before)
        if end < block.addr + block.size:
            after = _Block(end, block.addr + block.size - end, pool, page)
            after.splice(block, block.next)
            pool.put(after)
        block.addr, block.size, block.mapped = begin, end - begin, False
        self._merge(pool, block, block.prev)
        self._merge(pool, block, block.next)
        self.reserved -= end - begin
        if block.prev is None and block.next is None:
            self.segments -= 1  # nothing of it mapped: the segment goes
        else:
            pool.put(block)
