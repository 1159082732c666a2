"""Profiles from traces users already have (`memprofile import`,
`memprofile.import_trace`): a PyTorch kineto/Chrome trace recorded with
`profile_memory=True`, or a TensorFlow XSpace (`.xplane.pb`). The readers
(capture/torch/trace.py, capture/tensorflow/trace.py) turn the file into the
captures a live run makes, through the same accounting; from there it is an
ordinary Profile: the same model, analysis and renderers.
"""

from __future__ import annotations

import gzip
import platform
import zlib
from datetime import datetime, timezone
from pathlib import Path

from memprofile._version import __version__
from memprofile.capture.base import RecordedRun
from memprofile.errors import ProfileFormatError
from memprofile.files import refuse_special
from memprofile.model.profile import Note, Profile, RankInfo

#: Names of TensorFlow XSpace files (binary protobuf: nothing in their first bytes says so).
_XSPACE_SUFFIXES = (".pb", ".pb.gz", ".xplane")


def _head(path: Path, n: int = 4096) -> bytes:
    with path.open("rb") as f:
        start = f.read(n)
    if start[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                return f.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise ProfileFormatError(f"{path}: a gzip file that cannot be read ({exc})") from None
    return start


def read_run(path: str | Path) -> RecordedRun:
    """The run a trace file recorded; ProfileFormatError (one line, why)
    for anything that is not a trace with memory events."""
    p = Path(path)
    if not p.exists():
        raise ProfileFormatError(f"{p}: no such file")
    refuse_special(p, "trace")  # /dev/zero, a FIFO: said before anything opens it
    head = _head(p)
    name = p.name.lower()
    if head.lstrip()[:1] in (b"{", b"["):
        from memprofile.capture.torch.trace import read_torch_trace

        return read_torch_trace(p)
    if name.endswith(_XSPACE_SUFFIXES) or "xplane" in name:
        from memprofile.capture.tensorflow.trace import read_xspace_run

        return read_xspace_run(p)
    raise ProfileFormatError(
        f"{p}: not a trace memprofile can import (a PyTorch kineto/Chrome trace "
        f".json[.gz] or a TensorFlow .xplane.pb[.gz])"
    )


def import_trace(path: str | Path, name: str | None = None) -> Profile:
    """A Profile from a trace file (see the module's doc). The profile says
    it was imported, from what, and what the trace lacks."""
    from memprofile.analysis.analyse import analyse
    from memprofile.analysis.build import build_profile
    from memprofile.analysis.replay import replay
    from memprofile.analysis.step_table import step_table

    p = Path(path)
    run = read_run(p)
    if not any(log for c in run.captures for log in c.allocations):
        raise ProfileFormatError(f"{p}: the trace has no memory events (record it with profile_memory=True)")
    replays = [replay(log) for c in run.captures for log in c.allocations]
    notes = [Note("imported", f"imported from {p.name}: {run.description}")]
    notes.extend(Note("import_lacks", line) for line in run.lacks)
    started_at = run.started_at
    if not started_at:  # the file's times are relative: its modification time stands for the start
        started_at = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat()
        notes.append(Note("import_lacks", f"no start time in the file: {started_at} is when the file was last written"))
    profile = build_profile(
        run.captures,
        replays=replays,
        name=name or p.name,
        started_at=started_at,
        duration_s=run.duration_s,
        notes=notes,
        environment={"python": platform.python_version(), "memprofile": __version__},
    )
    profile.capture["imported_from"] = str(p.name)
    profile.capture["imported_format"] = run.description
    profile.steps = step_table(run.captures, profile)
    profile.distributed = rank_of(run.captures, run.started_at)
    return analyse(profile)


def rank_of(captures, started_at: str) -> RankInfo | None:
    """The rank a trace says it was recorded on (kineto's distributedInfo), so
    an imported rank merges with the job's others."""
    facts = next((c.facts for c in captures if "rank" in c.facts and "world_size" in c.facts), None)
    if facts is None:
        return None
    try:
        rank, world = int(facts["rank"]), int(facts["world_size"])
    except ValueError:
        return None
    if not 0 <= rank < world:
        return None
    start = datetime.fromisoformat(started_at).timestamp() if started_at else None
    return RankInfo(rank=rank, world_size=world, backend=str(facts.get("backend", "")), started_unix_s=start)
