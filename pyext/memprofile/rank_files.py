"""Where the ranks of a distributed job write their profiles, and how a
merge finds them again: one folder per job, one file per rank and profile
name (`NAME.rank3.memprofile.json.gz`), written by each rank on its own (no
rank waits for another, no file is shared). The folder may be a URL
(storage.Url: `s3://bucket/job/`): the same names, as objects under that prefix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from memprofile import storage
from memprofile.errors import ProfileFormatError
from memprofile.storage import Url

Folder = Path | Url

SUFFIX = ".memprofile.json.gz"
_RANK_FILE = re.compile(r"^(?P<name>.+)\.rank(?P<rank>\d+)\.memprofile\.json(\.gz)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A profile name as a file name: letters, digits, . _ - (others become -)."""
    return _UNSAFE.sub("-", name).strip("-.") or "profile"


class _Job(Protocol):
    """What a folder name needs of a rank (a RankInfo): this module names files, it imports no stage."""

    @property
    def run_id(self) -> str: ...


def default_dir(info: _Job | None) -> Path:
    """`./memprofile-<run id>/` for a job's ranks (all ranks compute the same
    name from the launcher's environment), `.` for a single process."""
    if info is None:
        return Path(".")
    return Path(f"memprofile-{safe_name(info.run_id) if info.run_id else 'job'}")


def rank_path(folder: Folder, name: str, rank: int) -> Folder:
    """The file of profile `name` of `rank` in `folder`; a second profile of
    the same name in the same process gets `name-2` (each rank counts its own
    alike, so the numbers match across ranks)."""
    base = safe_name(name)
    n = 1
    while True:
        stem = base if n == 1 else f"{base}-{n}"
        path = folder / f"{stem}.rank{rank}{SUFFIX}"
        key = str(path.absolute())
        if key not in _written:
            _written.add(key)
            return path
        n += 1


#: Files this process has written: a rerun of a job overwrites its own
#: files from the last run instead of counting past them.
_written: set[str] = set()


def single_path(folder: Folder, name: str) -> Folder:
    """NAME.memprofile.json.gz in `folder` (one process, not a job)."""
    return folder / f"{safe_name(name)}{SUFFIX}"


def parse_rank_file(path: Folder) -> tuple[str, int] | None:
    """(profile name, rank) of a rank file's name, None for any other file."""
    m = _RANK_FILE.match(path.name)
    return (m["name"], int(m["rank"])) if m else None


def find_rank_files(folder: Folder) -> list[Folder]:
    """The rank files of one profile in `folder` (or under a URL prefix), by
    rank. A folder holding several profiles' files (a script that profiled
    twice) must be narrowed to one: the error names them."""
    if isinstance(folder, Url):
        entries: list[Folder] = list(storage.list_files(folder))
    elif folder.is_dir():
        entries = list(folder.iterdir())
    else:
        raise ProfileFormatError(f"cannot merge {folder}: not a folder")
    found: dict[str, list[tuple[int, Folder]]] = {}
    for path in entries:
        parsed = parse_rank_file(path)
        if parsed:
            found.setdefault(parsed[0], []).append((parsed[1], path))
    if not found:
        raise ProfileFormatError(
            f"cannot merge {folder}: it holds no rank profiles (NAME.rankN{SUFFIX}); they are written by "
            f"`memprofile run` or memprofile.profile() in each rank of a torchrun job"
        )
    if len(found) > 1:
        names = ", ".join(f"{n} ({len(v)} files)" for n, v in sorted(found.items()))
        first = sorted(found)[0]
        example = (  # no shell expands a * in a URL: name the files
            " ".join(str(p) for _, p in sorted(found[first])[:2]) + (" …" if len(found[first]) > 2 else "")
            if isinstance(folder, Url)
            else f"{folder}/{first}.rank*"
        )
        raise ProfileFormatError(
            f"cannot merge {folder}: it holds the rank profiles of several profiles: {names}; merge one of them, "
            f"e.g. `memprofile merge {example}`"
        )
    (files,) = found.values()
    return [p for _, p in sorted(files)]
