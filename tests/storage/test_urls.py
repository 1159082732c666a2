"""Profiles at fsspec URLs without a network (fast tier): `memory://`, the
in-process filesystem fsspec ships, stands for an object store (a prefix is a
folder, an object is written whole), and `file://` is the local path it names.
The same code runs against a real S3 API in test_s3.py."""

from __future__ import annotations

import gzip
import sys
import uuid
from pathlib import Path

import pytest

import memprofile
from memprofile import cli, storage
from memprofile.errors import OutputPathError, ProfileFormatError
from memprofile.storage import Url
from tests.builders import make_profile

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def bucket():
    """A fresh `memory://` bucket, emptied after the test (fsspec's memory store is process-wide)."""
    name = f"bucket-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    fsspec.filesystem("memory").rm(f"/{name}", recursive=True)


def _rank_profiles(monkeypatch, out: str, world: int = 2) -> list:
    """Each rank's profile as a rank of a torchrun job makes it (RANK, WORLD_SIZE
    set), written by memprofile.profile(out=URL); rank 1 holds 8 MiB more."""
    profiles = []
    for rank in range(world):
        for name, value in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_RANK", rank)):
            monkeypatch.setenv(name, str(value))
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-url")
        with memprofile.profile(name="host step", out=out) as p:
            held = bytearray((4 + 8 * rank) << 20)
            held[::4096] = b"x" * len(held[::4096])  # touched: resident, so the host sampler sees it
        del held
        profiles.append(p)
    return profiles


def test_ranks_written_under_a_url_prefix_merge_and_load_as_from_a_folder(monkeypatch, bucket):
    # GIVEN two ranks that profiled with out="memory://bucket/job/" (a URL prefix, not a folder)
    profiles = _rank_profiles(monkeypatch, f"{bucket}/job/")
    # THEN each rank's file is one object under the prefix, named as rank_files names a folder's files
    names = sorted(
        Path(p).name for p in fsspec.filesystem("memory").ls(bucket.removeprefix("memory:/") + "/job", detail=False)
    )
    assert names == ["host-step.rank0.memprofile.json.gz", "host-step.rank1.memprofile.json.gz"]
    # WHEN each is loaded by its URL THEN it is the profile the rank made
    for rank, made in enumerate(profiles):
        back = memprofile.load(f"{bucket}/job/host-step.rank{rank}.memprofile.json.gz")
        assert (back.id, back.rank, back.peak_bytes) == (made.id, rank, made.peak_bytes)
    # WHEN the prefix is merged (the API, and the CLI as a user types it)
    merged = memprofile.merge(f"{bucket}/job/")
    assert merged.merged is not None and [r.rank for r in merged.merged.ranks] == [0, 1]
    assert [r.path for r in merged.merged.ranks] == [
        f"{bucket}/job/host-step.rank{r}.memprofile.json.gz" for r in (0, 1)
    ]
    assert [p.id for p in merged.ranks] == [p.id for p in profiles]  # the ranks read again from their URLs
    assert cli.main(["merge", f"{bucket}/job", "-o", f"{bucket}/merged.memprofile.json.gz"]) == 0
    assert memprofile.load(f"{bucket}/merged.memprofile.json.gz").merged.world_size == 2


def test_a_file_url_is_the_local_path_it_names(tmp_path):
    # GIVEN a profile saved by a file:// URL (spaces quoted as a URL quotes them)
    folder = tmp_path / "my runs"
    folder.mkdir()
    profile = make_profile(name="local")
    written = profile.save(f"file://{folder.as_posix().replace(' ', '%20')}/p.memprofile.json.gz")
    # THEN it is the local file, written as a local save writes (gzip, no temporary file left)
    assert written == folder / "p.memprofile.json.gz"
    assert sorted(p.name for p in folder.iterdir()) == ["p.memprofile.json.gz"]
    assert gzip.decompress(written.read_bytes()).startswith(b"{")
    # AND it reads back by its path and by its URL alike
    assert memprofile.load(written).to_json() == memprofile.load(f"file://{written}").to_json() == profile.to_json()
    with pytest.raises(ProfileFormatError, match="names a file on this machine"):
        memprofile.load("file://otherhost/p.json")


def test_objects_that_are_not_profiles_say_why_with_their_url(bucket):
    # GIVEN objects that are no profile: not JSON, cut-short gzip, a prefix, a missing key
    fs = fsspec.filesystem("memory")
    root = bucket.removeprefix("memory:/")
    fs.pipe_file(f"{root}/notes.json", b"not json")
    fs.pipe_file(f"{root}/cut.json.gz", gzip.compress(b'{"schema_version": 1}' * 100)[:40])
    fs.pipe_file(f"{root}/folder/x.txt", b"1")
    cases = {
        "notes.json": "not a memprofile profile: the content is not JSON",
        "cut.json.gz": "corrupt gzip data (truncated",
        "folder": "it is a folder (a prefix), not a file",
        "folder/": "it is a folder (a prefix), not a file",
        "missing.json.gz": "no such object",
    }
    for key, why in cases.items():
        # WHEN it is loaded THEN one line names the URL and says why
        with pytest.raises(ProfileFormatError) as caught:
            memprofile.load(f"{bucket}/{key}")
        message = str(caught.value)
        assert why in message and bucket in message and "\n" not in message, message
    # AND an object larger than the limit is refused before it is downloaded
    with pytest.raises(ProfileFormatError, match=r"8 bytes, more than the 4 bytes limit for a profile"):
        storage.read(Url(f"{bucket}/notes.json"), 4, "profile")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("nosuchstore://bucket/p.json", "fsspec knows no storage called 'nosuchstore'"),
        ("memory://", "names no bucket or folder"),
    ],
)
def test_a_bad_url_is_one_line(url, why):
    # GIVEN a URL of no known store, or of no bucket WHEN it is loaded or written THEN one line says so
    with pytest.raises(ProfileFormatError, match=why):
        memprofile.load(url)
    with pytest.raises(OutputPathError, match=why):
        make_profile().save(url)


def test_without_fsspec_a_url_names_the_extra_and_local_paths_work(monkeypatch, tmp_path):
    # GIVEN a Python without fsspec (import fsspec fails as it does where it is not installed)
    monkeypatch.setitem(sys.modules, "fsspec", None)
    profile = make_profile(name="no-fsspec")
    # WHEN a URL is read or written THEN one line says what to install
    with pytest.raises(ProfileFormatError, match=r"needs fsspec: pip install 'memprofile\[storage\]'"):
        memprofile.load("s3://bucket/job/p.json.gz")
    with pytest.raises(OutputPathError, match=r"needs fsspec: pip install 'memprofile\[storage\]'"):
        profile.save("s3://bucket/job/p.json.gz")
    assert cli.main(["merge", "s3://bucket/job/"]) == 1
    # AND local paths and file:// URLs work as before
    assert memprofile.load(profile.save(tmp_path / "p.json")).to_json() == profile.to_json()
    assert memprofile.load(f"file://{tmp_path}/p.json").to_json() == profile.to_json()


def test_a_prefix_holding_several_profiles_names_them_and_their_urls(monkeypatch, bucket):
    # GIVEN a job prefix where each rank profiled twice under two names
    for name in ("a", "b"):
        for rank in (0, 1):
            p = make_profile(name=name)
            p.distributed = memprofile.model.profile.RankInfo(rank=rank, world_size=2, local_rank=rank)
            p.save(f"{bucket}/job/{name}.rank{rank}.memprofile.json.gz")
    # WHEN the prefix is merged THEN the error names both and, since no shell expands * in a URL, the files
    with pytest.raises(ProfileFormatError) as caught:
        memprofile.merge(f"{bucket}/job/")
    message = str(caught.value)
    assert "a (2 files), b (2 files)" in message
    assert (
        f"memprofile merge {bucket}/job/a.rank0.memprofile.json.gz {bucket}/job/a.rank1.memprofile.json.gz" in message
    )
    # AND the files named merge
    assert memprofile.merge([f"{bucket}/job/a.rank{r}.memprofile.json.gz" for r in (0, 1)]).merged.world_size == 2


def test_url_paths_join_and_name_like_paths_and_keep_their_scheme():
    # GIVEN URLs as users type them (trailing slash or not, fsspec's chained form)
    job = Url("s3://bucket/runs/job/", {"anon": True})
    # THEN they join, name and take parents as a Path would, with s3:// kept whole and options carried
    assert str(job) == "s3://bucket/runs/job" and job.name == "job" and str(job.parent) == "s3://bucket/runs"
    rank = job / "x.rank0.memprofile.json.gz"
    assert str(rank) == "s3://bucket/runs/job/x.rank0.memprofile.json.gz" and rank.suffix == ".gz"
    assert rank.options == {"anon": True} and str(rank.with_name("y.html")) == "s3://bucket/runs/job/y.html"
    assert str(Url("s3://bucket").parent) == "s3://bucket"
    # AND what is a URL and what is a local path
    assert storage.is_url("simplecache::s3://bucket/key") and storage.is_url("gs://b/k") and storage.is_url(job)
    assert not storage.is_url("C://Users/x") and not storage.is_url("runs/job") and not storage.is_url(Path("a"))
    assert storage.as_target("file:///tmp/a%20b") == Path("/tmp/a b")


def test_memprofile_show_reads_a_url_as_it_reads_a_path(ip, fresh_store, monkeypatch, bucket):
    from IPython.core.error import UsageError

    # GIVEN two ranks' profiles under a URL prefix
    profiles = _rank_profiles(monkeypatch, f"{bucket}/job/")
    fresh_store.clear()
    # WHEN `%memprofile show` is given the prefix, then one rank's object
    ip.run_line_magic("memprofile", f"show {bucket}/job/")
    merged = fresh_store.last()
    ip.run_line_magic("memprofile", f"show {bucket}/job/host-step.rank1.memprofile.json.gz")
    # THEN the prefix is merged and the object loaded, each stored for the panel
    assert merged.merged is not None and merged.merged.world_size == 2
    assert [p.id for p in fresh_store.all()] == [merged.id, profiles[1].id]
    # AND a missing object is the magic's one-line usage error, naming the URL
    with pytest.raises(UsageError, match=f"cannot read profile '{bucket}/job/nothing.json.gz': no such object"):
        ip.run_line_magic("memprofile", f"show {bucket}/job/nothing.json.gz")


def test_a_profile_the_store_refuses_at_the_end_is_kept_on_this_machine(monkeypatch, tmp_path, capsys):
    # GIVEN a rank whose out= URL cannot be written when its profile ends (here: a store fsspec
    # cannot open; on a cluster: credentials that expired during a long run)
    monkeypatch.chdir(tmp_path)
    for name, value in (("RANK", 1), ("WORLD_SIZE", 2), ("LOCAL_RANK", 1), ("TORCHELASTIC_RUN_ID", "late")):
        monkeypatch.setenv(name, str(value))
    with memprofile.profile(name="long run", out="nosuchstore://bucket/job/") as p:
        bytearray(1 << 20)
    # THEN the run goes on, the failure is said, and the profile is in the job's local folder instead
    err = capsys.readouterr().err
    assert "rank 1: cannot save the profile 'long run' to nosuchstore://bucket/job/long-run.rank1" in err
    local = tmp_path / "memprofile-late" / "long-run.rank1.memprofile.json.gz"
    assert f"rank 1: saved it on this machine instead: {local}" in err
    assert memprofile.load(local).id == p.id
