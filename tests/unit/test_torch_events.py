"""The torch accounting shared by the live walk and recorded traces, on plain
records (no torch): CUDA's baseline from the allocator's running total."""

from __future__ import annotations

from memprofile.capture.torch.ledger import MemoryLedger, add_cuda_baseline


def _held_at_start(logs) -> int:
    log = logs["cuda:0"]
    return sum(log.size[i] for i in range(len(log)) if log.pre_existing[i])


def test_a_device_whose_first_event_is_a_free_keeps_what_it_held_before():
    # GIVEN a window that opens with zero_grad: a 100 B block from before is freed first
    ledger = MemoryLedger()
    ledger.free("cuda:0", -100, "g", 0.1, False, 7, total_allocated=900)
    ledger.alloc("cuda:0", 50, "a", 0.2, "", "aten::empty", "forward", True, 8, total_allocated=950)
    logs, side = ledger.logs()
    add_cuda_baseline(logs, side, ledger.cuda_before)
    # THEN the allocator held 1,000 B before the window: the freed block and 900 B more
    assert _held_at_start(logs) == 1000
    assert sorted(logs["cuda:0"].size) == [50, 100, 900]


def test_the_first_allocation_gives_the_baseline_from_the_running_total():
    ledger = MemoryLedger()
    ledger.alloc("cuda:0", 50, "a", 0.2, "", "aten::empty", "forward", True, 8, total_allocated=1050)
    ledger.free("cuda:0", -50, "a", 0.3, False, 8, total_allocated=1000)
    logs, side = ledger.logs()
    add_cuda_baseline(logs, side, ledger.cuda_before)
    assert _held_at_start(logs) == 1000 and logs["cuda:0"].t_free[0] == 0.3
