"""The command line, run as a user runs it (a subprocess)."""

import subprocess
import sys

import pytest

import memprofile


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "memprofile.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_run_show_export(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import sys\nbuf = bytearray(64 * 2**20)\nprint('args', sys.argv[1:])\n")
    out = _cli("run", "-o", "job.json", "job.py", "--flag", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "args ['--flag']" in out.stdout
    profile = memprofile.load(tmp_path / "job.json")
    host = profile.device("host")
    assert profile.name == "job" and host.peak_bytes - host.baseline_bytes >= 60 * 2**20
    assert "peak" in _cli("show", "job.json", cwd=tmp_path).stdout
    assert _cli("export", "job.json", "-o", "r.html", cwd=tmp_path).returncode == 0
    assert "<!DOCTYPE html>" in (tmp_path / "r.html").read_text()


def test_failing_script_keeps_its_profile_and_fails(tmp_path):
    (tmp_path / "bad.py").write_text("raise RuntimeError('nope')\n")
    out = _cli("run", "bad.py", cwd=tmp_path)
    assert out.returncode == 1 and "RuntimeError: nope" in out.stderr
    assert memprofile.load(tmp_path / "bad.memprofile.json.gz").error.type == "RuntimeError"
    assert "RuntimeError" in (tmp_path / "bad.memprofile.html").read_text()


def test_unreadable_profile_says_why(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    out = _cli("show", "x.json", cwd=tmp_path)
    assert out.returncode == 1 and "not a memprofile profile" in out.stderr


def test_compare_two_saved_profiles(tmp_path):
    from tests.builders import make_rich_profile

    a, b = make_rich_profile(name="before"), make_rich_profile(name="after")
    b.device("cpu").peak_bytes -= 2**20
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json.gz")
    out = _cli("compare", "a.json", "b.json.gz", "-o", "c.html", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("memprofile compare 'before' -> 'after': peak -1.00 MiB")
    assert "before → after" in (tmp_path / "c.html").read_text()
