"""Fixtures of the reliability tests."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs): a write past it fails with ENOSPC part-way."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"a 64 KiB tmpfs cannot be mounted here (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
