"""Issue 27, rows 4, 7, 13 and row 8's exit status: `memprofile run` ends as
`python script.py` ends.

Row 4: a script whose `os.fork()` child ends with `sys.exit` or an exception
(plain, and with torch's profiler recording at the fork): the child exits as
it does bare, writes nothing, waits on nothing; the parent's profile is
written once, by the parent. Also `memprofile.profile()` around a fork.

Row 7: a latin-1 script with a coding cookie, a UTF-8 script with a BOM, and
invalid UTF-8 (python refuses it: the same SyntaxError and exit status, and
nothing runs or is written).

Row 13: SIGTERM (the profile of how far it got is written, then the process
dies of SIGTERM as it does bare); the script's own SIGTERM handler stays its
own; `os._exit` (and SIGKILL) cannot leave a profile: one line says none was
written; a script that changes directory gets its files where the command
said, the printed paths are absolute and right, and no folder is left empty.

Row 8 (run): a full disk (a real 64 KiB tmpfs): `run` exits with the
script's own status and says in one line that the profile could not be
written, and why.

Each case is a real `python -m memprofile run` in a child process (its own
session, killed whole on a timeout: a hang fails the test), compared with
`python script.py` bare.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import memprofile

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


@dataclass
class Ran:
    rc: int
    out: str
    err: str


def _env() -> dict[str, str]:
    return {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONPATH": str(ROOT / "pyext"), "PYTHONIOENCODING": "utf-8"}


def _run(argv: list[str], cwd: Path, timeout: float = TIMEOUT, signal_when: Path | None = None) -> Ran:
    """Run `argv` in its own session; on a timeout kill the whole session (a
    hung forked child holds the pipes) and fail. `signal_when`: send SIGTERM
    to the process itself once that file exists."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        if signal_when is not None:
            deadline = time.monotonic() + timeout
            while not signal_when.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv)} still ran after {timeout} s (it hangs)\n{err.decode(errors='replace')[-3000:]}")
    return Ran(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def bare(script: Path, cwd: Path, **kw) -> Ran:
    return _run([sys.executable, str(script.name if script.parent == cwd else script)], cwd, **kw)


def profiled(script: Path, cwd: Path, *options: str, **kw) -> Ran:
    return _run(
        [sys.executable, "-m", "memprofile", "run", *options, str(script.name if script.parent == cwd else script)],
        cwd,
        **kw,
    )


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- row 4: os.fork() ----------------------------------------------------------------------------

#: Each script forks one child per ending in turn (FORK_CHILD with the script's work and the ending), and
#: waits for it.
FORK_PLAIN = """\
import os, sys
"""

FORK_TORCH = """\
import os, sys
import torch
x = torch.ones(1000, 1000)
y = x @ x
"""

CHILD_WORK = {
    "plain": 'print("child", flush=True)',
    "torch": 'z = torch.ones(10) * 2\n    print("child", float(z.sum()), flush=True)',
}

FORK_CHILD = """\
pid = os.fork()
if pid == 0:
    {work}
    {ending}
_, status = os.waitpid(pid, 0)
print("parent sees the child end with", os.waitstatus_to_exitcode(status), flush=True)
"""

ENDINGS = {
    "sys.exit(3)": "sys.exit(3)",
    "raise": "raise ValueError('child failed')",
    "sys.exit(str)": "sys.exit('child says bye')",
}


@pytest.mark.parametrize("script", ["plain", "torch"])
def test_a_forked_child_ends_as_it_does_bare_and_only_the_parent_writes_the_profile(tmp_path, script):
    # GIVEN a script that forks one child per ending in turn (each child ends as ENDINGS says, the parent waits)
    path = tmp_path / "forks.py"
    children = "".join(FORK_CHILD.format(work=CHILD_WORK[script], ending=ending) for ending in ENDINGS.values())
    path.write_text((FORK_PLAIN if script == "plain" else FORK_TORCH) + children)
    want = bare(path, tmp_path)
    ran = profiled(path, tmp_path, "--out", "out")
    # THEN each child ended as it does bare (the parent saw the same exit status from each) and so did the run
    assert (ran.rc, ran.out) == (want.rc, want.out) == (0, ran.out), ran.err[-3000:]
    assert [line.rsplit(" ", 1)[-1] for line in ran.out.splitlines() if line.startswith("parent sees")] == [
        "3",
        "1",
        "1",
    ], ran.out
    assert ran.err.count("memprofile: profile written to") == 1, ran.err[-3000:]  # the parent's, once
    profile = memprofile.load(tmp_path / "out" / "forks.memprofile.json.gz")
    assert profile.error is None  # the parent's run, not a child's ending
    if script == "torch":
        assert "torch" in {f.name for f in profile.frameworks} and profile.device("cpu").peak_bytes >= 4_000_000
    # AND the raising child's traceback and the sys.exit(str) child's message are on stderr, as bare
    assert "ValueError: child failed" in ran.err and "ValueError: child failed" in want.err
    assert "child says bye" in ran.err and "child says bye" in want.err


API_FORK = """\
import os, sys
import torch
import memprofile
with memprofile.profile(name="api", out="out") as p:
    x = torch.ones(1000, 1000)
    pid = os.fork()
    if pid == 0:
        y = torch.ones(10)
        sys.exit(5)
    _, status = os.waitpid(pid, 0)
print("child ended with", os.waitstatus_to_exitcode(status), "; error:", p.error)
"""


def test_memprofile_profile_around_a_fork_is_the_parents_alone(tmp_path):
    path = tmp_path / "api.py"
    path.write_text(API_FORK)
    ran = bare(path, tmp_path)
    assert ran.rc == 0 and ran.out == "child ended with 5 ; error: None\n", ran.err[-3000:]
    assert files_under(tmp_path / "out") == ["api.memprofile.json.gz"]
    assert memprofile.load(tmp_path / "out" / "api.memprofile.json.gz").error is None


# -- row 7: how the script is read ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, raw, printed",
    [
        ("latin1", b'# -*- coding: latin-1 -*-\nprint("caf\xe9")\n', "café\n"),
        ("bom", b'\xef\xbb\xbfprint("with a BOM")\n', "with a BOM\n"),
    ],
)
def test_a_script_is_read_as_python_reads_it(tmp_path, name, raw, printed):
    path = tmp_path / f"{name}.py"
    path.write_bytes(raw)
    want = bare(path, tmp_path)
    ran = profiled(path, tmp_path, "--out", "out")
    assert (ran.rc, ran.out) == (want.rc, want.out) == (0, printed), ran.err[-3000:]
    assert memprofile.load(tmp_path / "out" / f"{name}.memprofile.json.gz").source == raw.decode(
        "latin-1" if name == "latin1" else "utf-8-sig"
    )


@pytest.mark.parametrize(
    "raw",
    [b'print("caf\xe9")\n', b'# coding: utf-8\nx = 1\nprint("caf\xe9")\n', b"# coding: no-such-codec\nprint(1)\n"],
    ids=["no-cookie", "cookie", "bad-cookie"],
)
def test_a_script_python_refuses_is_refused_with_pythons_error(tmp_path, raw):
    path = tmp_path / "bad.py"
    path.write_bytes(raw)
    want = bare(path, tmp_path)
    ran = profiled(path, tmp_path, "--out", "out")
    assert want.rc == ran.rc == 1 and want.out == ran.out == ""
    assert ran.err.strip().splitlines()[-1].startswith("SyntaxError: ")
    assert ran.err == want.err
    assert "Traceback" not in ran.err and not (tmp_path / "out").exists()


# -- row 13: SIGTERM, os._exit, chdir ------------------------------------------------------------

SLOW = """\
import time
keep = bytearray(8 * 2**20)
print("working", flush=True)
open("started", "w").close()
time.sleep(100)
print("never")
"""


def test_sigterm_writes_the_profile_then_dies_of_sigterm_as_bare(tmp_path):
    path = tmp_path / "slow.py"
    path.write_text(SLOW)
    want = bare(path, tmp_path, signal_when=tmp_path / "started")
    (tmp_path / "started").unlink()
    ran = profiled(path, tmp_path, "--out", "out", signal_when=tmp_path / "started")
    assert want.rc == ran.rc == -signal.SIGTERM and want.out == ran.out == "working\n", ran.err[-3000:]
    profile = memprofile.load(tmp_path / "out" / "slow.memprofile.json.gz")
    assert profile.error is not None and "SIGTERM" in ran.err
    assert f"profile written to {tmp_path / 'out' / 'slow.memprofile.json.gz'}" in ran.err


OWN_HANDLER = """\
import signal, sys, time
def handler(signum, frame):
    print("the script's own handler", signum, flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, handler)
open("started", "w").close()
time.sleep(100)
"""


def test_the_scripts_own_sigterm_handler_is_its_own(tmp_path):
    path = tmp_path / "handles.py"
    path.write_text(OWN_HANDLER)
    want = bare(path, tmp_path, signal_when=tmp_path / "started")
    (tmp_path / "started").unlink()
    ran = profiled(path, tmp_path, "--out", "out", signal_when=tmp_path / "started")
    assert (ran.rc, ran.out) == (want.rc, want.out) == (7, "the script's own handler 15\n"), ran.err[-3000:]
    assert (tmp_path / "out" / "handles.memprofile.json.gz").exists()


@pytest.mark.parametrize("how", ["os._exit(3)", "os.kill(os.getpid(), signal.SIGKILL)"])
def test_an_end_no_profile_can_survive_is_said_in_one_line(tmp_path, how):
    path = tmp_path / "abrupt.py"
    path.write_text(f"import os, signal, sys\nprint('before', flush=True)\n{how}\nprint('never')\n")
    want = bare(path, tmp_path)
    ran = profiled(path, tmp_path, "--out", "out")
    assert (ran.rc, ran.out) == (want.rc, want.out) == (ran.rc, "before\n"), ran.err[-3000:]
    said = [line for line in ran.err.splitlines() if line.startswith("memprofile: ")]
    assert len(said) == 1 and "no profile was written" in said[0], ran.err
    assert "os._exit" in said[0] and "SIGKILL" in said[0]
    assert not (tmp_path / "out").exists()  # no folder left empty


CHDIR = """\
import os
os.makedirs("elsewhere", exist_ok=True)
os.chdir("elsewhere")
keep = bytearray(2**20)
print("in", os.path.basename(os.getcwd()))
"""


@pytest.mark.parametrize(
    "options, folder", [((), "."), (("--out", "profiles"), "profiles"), (("-o", "named/p.json.gz"), "named")]
)
def test_a_script_that_changes_directory_gets_its_files_where_the_command_said(tmp_path, options, folder):
    path = tmp_path / "moves.py"
    path.write_text(CHDIR)
    if options[:1] == ("-o",):
        (tmp_path / "named").mkdir()
    ran = profiled(path, tmp_path, *options)
    assert (ran.rc, ran.out) == (0, "in elsewhere\n"), ran.err[-3000:]
    assert files_under(tmp_path / "elsewhere") == []
    profile_name = "p.json.gz" if options[:1] == ("-o",) else "moves.memprofile.json.gz"
    profile_path = (tmp_path / folder / profile_name).resolve()
    assert profile_path.exists() and memprofile.load(profile_path).name in ("moves", "p")
    printed = [line.split(" written to ", 1)[1] for line in ran.err.splitlines() if " written to " in line]
    assert printed and all(Path(p).is_absolute() and Path(p).exists() for p in printed), printed
    assert str(profile_path) in printed
    empty = [p for p in tmp_path.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == [tmp_path / "elsewhere"], empty  # the script's own, where nothing of memprofile's went


# -- row 8 (run): a full disk --------------------------------------------------------------------

# (the full_disk fixture: tests/reliability/conftest.py)


FILLS = """\
import sys
keep = [bytearray(1000) for _ in range(20000)]
print("done")
sys.exit({code})
"""


@pytest.mark.parametrize("code", [0, 4])
def test_a_full_disk_leaves_the_scripts_own_exit_status_and_one_line(tmp_path, full_disk, code):
    (full_disk / "filler").write_bytes(b"x" * (60 << 10))  # what is left cannot hold the report
    path = tmp_path / "fills.py"
    path.write_text(FILLS.format(code=code))
    want = bare(path, tmp_path)
    ran = profiled(path, tmp_path, "--out", str(full_disk))
    assert (ran.rc, ran.out) == (want.rc, want.out) == (code, "done\n"), ran.err[-3000:]
    said = [line for line in ran.err.splitlines() if "the disk is full" in line]
    assert len(said) == 1 and said[0].startswith("memprofile: "), ran.err[-3000:]
    assert "Traceback" not in ran.err
