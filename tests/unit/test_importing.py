"""`memprofile import` and `memprofile.import_trace` before any reader runs: a
path that is no trace is one line saying why, and nothing is written."""

from __future__ import annotations

import gzip

import pytest

import memprofile
from memprofile.cli import main
from memprofile.errors import ProfileFormatError


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ProfileFormatError, match="no such file"):
        memprofile.import_trace(tmp_path / "nope.json")


def test_a_file_of_no_known_kind_names_the_kinds_it_takes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("loss went down\n")
    with pytest.raises(ProfileFormatError, match="kineto/Chrome trace .* TensorFlow .xplane.pb"):
        memprofile.import_trace(path)


def test_a_broken_gzip_says_it_is_one(tmp_path):
    path = tmp_path / "trace.json.gz"
    path.write_bytes(gzip.compress(b'{"traceEvents": []}')[:12])
    with pytest.raises(ProfileFormatError, match="gzip"):
        memprofile.import_trace(path)


def test_the_cli_prints_one_line_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("loss went down\n")
    out = tmp_path / "report.html"
    assert main(["import", str(path), "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memprofile: ") and "notes.txt" in err[0]
    assert not out.exists()


def test_the_cli_refuses_an_output_folder_that_does_not_exist(tmp_path, capsys):
    # as export: a folder that cannot hold it is 1, a name of no known format 2
    assert main(["import", str(tmp_path / "t.json"), "-o", str(tmp_path / "no" / "r.html")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_gzip_with_bad_deflate_data_says_so(tmp_path):
    path = tmp_path / "trace.json.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 64)
    with pytest.raises(ProfileFormatError, match="gzip"):
        memprofile.import_trace(path)


def test_the_cli_refuses_an_output_it_cannot_write_as_a_report_or_a_profile(tmp_path, capsys):
    assert main(["import", str(tmp_path / "t.json"), "-o", str(tmp_path / "report.txt")]) == 2
    assert ".html" in capsys.readouterr().err and not (tmp_path / "report.txt").exists()
