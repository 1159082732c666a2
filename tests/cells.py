"""Running a cell in the tests' IPython shell (the `ip` fixture)."""

from __future__ import annotations

import memprofile
from memprofile.model.profile import Profile


def run_cell(ip, cell: str) -> Profile:
    """Run `cell`; raise what it raised; the newest stored profile."""
    result = ip.run_cell(cell)
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return memprofile.last()
