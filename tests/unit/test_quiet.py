"""What memprofile's own profiler start and stop print is kept out of the cell:
any line in a framework's native log format, written to fd 2 (where the
kernel forwards it from) while they run; other lines pass through."""

from __future__ import annotations

import os

import pytest

from memprofile.capture.quiet import is_noise, quiet_stderr

# Lines as the frameworks printed them here (torch 2.13 CPU, torch 2.14.1 CUDA build without a GPU,
# TF 2.21) and as older releases print them (TF before 2.16, c10 before torch 2.4).
FRAMEWORK_LINES = [
    "USDT:2026-12-06 01:42:22 4289:4289 SyncActivityProfilerHandler.cpp:39] profiler_start",
    "ERROR:2026-12-06 01:42:22 4289:4289 DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35",
    "STAGE:2023-05-02 10:01:02 812:812 ActivityProfilerController.cpp:312] Completed Stage: Warm Up",
    "[W1206 01:59:02.620398676 CPUAllocator.cpp:245] Memory block of unknown size was allocated before the profiling",
    "[W CPUAllocator.cpp:235] Memory block of unknown size was allocated before the profiling started",
    "I0000 00:00:1765000000.123456   12345 profiler_session.cc:104] Profiler session initializing.",
    "E0000 00:00:1765000000.123456   12345 some_future_file.cc:9] a message no release printed yet",
    "2023-01-01 12:00:00.123456: I tensorflow/core/profiler/lib/profiler_session.cc:126] Profiler session started.",
]
USER_LINES = ["step 3 loss 0.512", "ERROR: my data loader failed", "W: 12 files skipped", "[W] retrying"]


@pytest.mark.parametrize("line", FRAMEWORK_LINES)
def test_a_frameworks_log_line_is_noise(line):
    assert is_noise(line + "\n")


@pytest.mark.parametrize("line", USER_LINES)
def test_a_users_line_is_not(line):
    assert not is_noise(line + "\n")


def test_only_the_users_lines_pass_through_fd_2(capfd):
    # GIVEN lines written to fd 2 (as C++ writes them, past Python's sys.stderr) while quiet
    with quiet_stderr():
        for line in [*FRAMEWORK_LINES, *USER_LINES]:
            os.write(2, (line + "\n").encode())
    # THEN the user's lines come out, in order, and no framework line does
    assert capfd.readouterr().err.splitlines() == USER_LINES
    # AND outside it nothing is filtered: the user's own framework lines are theirs
    os.write(2, (FRAMEWORK_LINES[1] + "\n").encode())
    assert capfd.readouterr().err.splitlines() == [FRAMEWORK_LINES[1]]


def test_torchs_own_profiler_lines_are_kept_out(capfd):
    torch = pytest.importorskip("torch")
    from memprofile.capture.torch import compat as torch_compat

    # GIVEN torch's profiler started and stopped as the collector does, with a block from before freed
    old = torch.empty(1000)
    profiler = torch_compat.memory_profiler(torch, record_shapes=False, with_stack=False)
    with quiet_stderr():
        profiler.__enter__()
        del old
        torch.ones(10).sum()
    with quiet_stderr():
        torch_compat.stop_memory_profiler(profiler)
    # THEN nothing of kineto's or c10's reached fd 2
    assert capfd.readouterr().err == ""
