"""@memprofile.profiled and the memory-budget example of docs/scripts_and_ranks.md,
run by pytest itself: it passes within its budget and fails over it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import memprofile

DOC = Path(__file__).parents[2] / "docs" / "scripts_and_ranks.md"
torch = pytest.importorskip("torch")


def _budget_example() -> str:
    text = DOC.read_text()
    start = text.index("# test_memory_budget.py")
    return text[start : text.index("```", start)]


def _pytest(tmp_path, source: str):
    (tmp_path / "test_memory_budget.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_memory_budget.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_documented_budget_holds_and_a_smaller_one_fails(tmp_path):
    example = _budget_example()
    within = _pytest(tmp_path, example)
    assert within.returncode == 0, within.stdout + within.stderr
    assert "2 passed" in within.stdout
    over = _pytest(tmp_path, re.sub(r"BUDGET = 64 \* MiB", "BUDGET = 4 * MiB", example))
    assert over.returncode == 1, over.stdout
    # Both fail, and the message is the profile's summary: the peak on torch's allocator
    assert "2 failed" in over.stdout and "AssertionError: <Profile 'train step': peak" in over.stdout
    assert "on cpu" in over.stdout


def test_profiled_returns_the_result_and_keeps_a_profile_per_call():
    @memprofile.profiled()
    def make(n):
        return torch.ones(n, 1024)  # n KiB * 4

    out = make(4096)
    first = make.profile
    assert out.shape == (4096, 1024) and first.name.endswith("make")
    assert first.peak_bytes >= 16 * memprofile.MiB and memprofile.last() is first
    make(1024)
    assert make.profile is not first and make.profile.peak_bytes < first.peak_bytes


def test_a_call_that_raises_keeps_its_profile_and_reraises():
    @memprofile.profiled(name="broken")
    def broken():
        x = torch.ones(1 << 20)  # noqa: F841
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        broken()
    assert broken.profile.error.type == "ValueError" and broken.profile.name == "broken"


def test_coroutines_and_generators_are_refused_with_the_way_out():
    async def step():
        pass

    with pytest.raises(TypeError, match="profile inside it with memprofile.profile"):
        memprofile.profiled()(step)
