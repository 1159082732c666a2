"""Profiles on S3, end to end, against a real S3 API: moto's server mode,
started in the test on a free port. It is set up as a user points the AWS
tools at an S3-compatible server (docs/storage.md): AWS_ENDPOINT_URL and the
credentials in the environment; nothing in memprofile knows it is a test.

A 2-rank DDP job (tests/distributed/ddp_train.py, gloo on CPU) under torchrun
writes each rank's profile with `memprofile run --out s3://bucket/job/`;
`memprofile merge s3://bucket/job/` and `memprofile.load("s3://…")` read them
back, and each rank's figures are the ones the rank itself measured.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memprofile
from memprofile import cli
from memprofile.errors import ProfileFormatError
from tests.distributed.test_torchrun import _unseen_free

#: One worker runs them all (./scripts/test.sh: --dist loadgroup): one server, one torchrun job.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("s3")]

pytest.importorskip("s3fs")
pytest.importorskip("torch.distributed")
moto_server = pytest.importorskip("moto.server")

BIN = Path(sys.executable).parent
SCRIPT = Path(__file__).parents[1] / "distributed" / "ddp_train.py"
EXTRA_MIB = 16
MiB = 1 << 20
TIMEOUT_S = 240  # two ranks importing torch on a loaded 2-core machine
#: What the user's own AWS setup could add: the test's S3 is only the one it starts.
_AWS_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_PROFILE")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A running S3 API with a bucket `bucket`; the environment as a user sets it: (endpoint, env)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's line per request: not in the test's log
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    home = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for name in _AWS_VARIABLES:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))  # none: not the user's ~/.aws
        mp.setenv("AWS_CONFIG_FILE", str(home / "config"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for
        _fresh_s3fs()
        import fsspec

        fsspec.filesystem("s3").mkdir("bucket")
        yield endpoint, dict(os.environ)
    _fresh_s3fs()
    server.stop()


def _fresh_s3fs():
    """s3fs keeps one client per set of options: a changed environment needs a new one."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def _ranks_env(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # torchrun --no-python finds `memprofile` here
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def job(s3, tmp_path_factory):
    """torchrun, 2 ranks, each `memprofile run --out s3://bucket/job/ ddp_train.py`; (folder, truth per rank)."""
    _, env = s3
    folder = tmp_path_factory.mktemp("job")
    truth = folder / "truth"
    command = [
        str(BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--standalone",
        "--no-python",
        "memprofile",
        "run",
        "--out",
        "s3://bucket/job/",
        str(SCRIPT),
        "--truth",
        str(truth),
        "--steps",
        "2",
        "--extra-mib",
        str(EXTRA_MIB),
    ]
    done = subprocess.run(command, cwd=folder, env=_ranks_env(env), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "memprofile: when every rank has finished: memprofile merge s3://bucket/job" in done.stderr
    return folder, {r: json.loads((truth / f"truth.rank{r}.json").read_text()) for r in (0, 1)}


def test_a_torchrun_job_writes_its_ranks_to_s3_and_merge_reads_them(s3, job):
    import fsspec

    _, env = s3
    folder, truth = job
    # GIVEN the job's ranks wrote to s3://bucket/job/ THEN the bucket holds one object per rank, nothing local
    assert sorted(fsspec.filesystem("s3").ls("bucket/job", detail=False)) == [
        "bucket/job/ddp_train.rank0.memprofile.json.gz",
        "bucket/job/ddp_train.rank1.memprofile.json.gz",
    ]
    assert not list(folder.glob("memprofile-*"))
    # WHEN each is loaded by its URL THEN it is that rank's profile, with the bytes the rank itself counted
    for rank in (0, 1):
        p = memprofile.load(f"s3://bucket/job/ddp_train.rank{rank}.memprofile.json.gz")
        assert (p.rank, p.distributed.world_size, p.distributed.backend) == (rank, 2, "gloo")
        assert p.peak.by_category["parameter"] == truth[rank]["parameter_bytes"]
        assert p.peak.by_category["optimizer_state"] == truth[rank]["optimizer_state_bytes"]
    # WHEN the prefix is merged as a user types it
    done = subprocess.run(
        [str(BIN / "memprofile"), "merge", "s3://bucket/job/"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # THEN rank 1, which holds the extra buffer, is the highest, and the report is written here
    assert "rank 1 peaks highest" in done.stdout
    assert "<!DOCTYPE html>" in (folder / "ddp_train.merged.memprofile.html").read_text()
    # AND merged into the bucket (-o s3://…), the merged profile loads and finds its ranks' objects again
    assert cli.main(["merge", "s3://bucket/job", "-o", "s3://bucket/merged/job.memprofile.json.gz"]) == 0
    merged = memprofile.load("s3://bucket/merged/job.memprofile.json.gz")
    assert merged.merged.world_size == 2 and merged.highest_rank.rank == 1
    assert [r.rank for r in merged.ranks] == [0, 1]  # each read again from its URL
    by_rank = {r.rank: r for r in merged.merged.ranks}
    # (less the copy of the parameters DDP broadcasts, whose free torch's profiler sometimes misses:
    # tests/distributed/test_torchrun.py UNSEEN_FREE_OP; a CI run had it on rank 0 alone)
    unseen = {r: _unseen_free(merged.ranks[r], truth[r]["parameter_bytes"]) for r in (0, 1)}
    assert (by_rank[1].peak_bytes - unseen[1]) - (by_rank[0].peak_bytes - unseen[0]) >= EXTRA_MIB * MiB - (1 << 20)


def test_a_script_run_with_out_s3_writes_its_profile_and_a_report_that_opens_in_a_browser(s3, tmp_path):
    import fsspec

    _, env = s3
    (tmp_path / "job.py").write_text("buffer = bytearray(32 << 20)\n")
    # WHEN one process runs with --out s3://bucket/single/ (no torchrun: its profile and HTML report)
    done = subprocess.run(
        [str(BIN / "memprofile"), "run", "--out", "s3://bucket/single/", "job.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    # THEN both are objects under the prefix, the report stored as HTML, and nothing is written locally
    assert "memprofile: report written to s3://bucket/single/job.memprofile.html" in done.stderr
    fs = fsspec.filesystem("s3")
    assert fs.info("bucket/single/job.memprofile.html")["ContentType"].startswith("text/html")
    assert b"<!DOCTYPE html>" in fs.cat_file("bucket/single/job.memprofile.html")[:200]
    assert memprofile.load("s3://bucket/single/job.memprofile.json.gz").name == "job"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.py"]


def test_the_endpoint_from_fsspec_options_instead_of_aws_endpoint_url(s3, job, monkeypatch):
    endpoint, env = s3
    url = "s3://bucket/job/ddp_train.rank1.memprofile.json.gz"
    # GIVEN the endpoint not in AWS_ENDPOINT_URL but in fsspec's own configuration (read when fsspec is imported)
    env = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"}
    done = subprocess.run(
        [str(BIN / "memprofile"), "show", url],
        env={**env, "FSSPEC_S3_ENDPOINT_URL": endpoint},
        capture_output=True,
        text=True,
    )
    # THEN the CLI reads the rank's profile from it
    assert done.returncode == 0 and "ddp_train" in done.stdout, done.stderr
    # AND in Python the same option goes in storage_options
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    _fresh_s3fs()
    try:
        assert memprofile.load(url, storage_options={"endpoint_url": endpoint}).rank == 1
    finally:
        monkeypatch.undo()
        _fresh_s3fs()


def test_bad_urls_missing_objects_and_buckets_are_one_line(s3, tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    cases = [
        (
            ["show", "s3://bucket/job/nothing.memprofile.json.gz"],
            1,
            "s3://bucket/job/nothing.memprofile.json.gz': no such object",
        ),
        (["merge", "s3://no-such-bucket/job/"], 1, "the bucket does not exist"),
        (["merge", "s3://bucket/empty/"], 1, "cannot merge s3://bucket/empty: it holds no rank profiles"),
        (["show", "s3://"], 1, "s3:// names no bucket or folder"),
        (["run", "--out", "s3://no-such-bucket/job/", str(script)], 2, "'no-such-bucket' does not exist (the bucket"),
        (
            ["export", "s3://bucket/job/ddp_train.rank0.memprofile.json.gz", "-o", "s3://no-such-bucket/r.html"],
            1,
            "does not exist",
        ),
    ]
    for argv, status, why in cases:
        # WHEN the command meets a missing object or bucket, or a URL of no bucket
        code = cli.main(argv)
        err = capsys.readouterr().err.strip()
        # THEN it fails with one line that says why, naming the URL
        assert code == status and why in err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "ran").exists()  # said before the script ran
    with pytest.raises(ProfileFormatError, match="no such object"):
        memprofile.load("s3://bucket/nothing.json")


def test_without_credentials_reads_and_writes_say_so_in_one_line(s3, tmp_path, monkeypatch, capsys):
    # GIVEN no credentials anywhere the AWS tools look (environment, files, instance role)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    _fresh_s3fs()
    script = tmp_path / "script.py"
    script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    try:
        for argv, status in (
            (["show", "s3://bucket/job/any.memprofile.json.gz"], 1),
            (["merge", "s3://bucket/job/"], 1),
            (["run", "--out", "s3://bucket/job2/", str(script)], 2),
        ):
            # WHEN a profile is read, a prefix merged, or a run's --out checked
            code = cli.main(argv)
            err = capsys.readouterr().err.strip()
            # THEN one line says no credentials were found, and where to put them
            assert code == status and "\n" not in err, (argv, err)
            assert "no credentials found" in err and "AWS_ACCESS_KEY_ID" in err and "s3://bucket/job" in err, err
        assert not (tmp_path / "ran").exists()
    finally:
        monkeypatch.undo()
        _fresh_s3fs()


def test_import_memprofile_imports_no_fsspec_or_s3fs():
    # GIVEN a fresh interpreter WHEN memprofile, its profiler and its CLI are imported
    code = (
        "import sys, memprofile, memprofile.profiler, memprofile.cli\n"
        "print([m for m in ('fsspec', 's3fs', 'botocore') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # THEN no storage package was imported: they load when a URL is used
    assert done.stdout.strip() == "[]"
