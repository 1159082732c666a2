"""Issue 27, rows 8, 10 and 11: the files memprofile writes and reads.

Row 8, a full disk (a real 64 KiB tmpfs): a profile or report that does not
fit leaves no partial file and no temporary file, and overwriting a good
profile (or report) with one that does not fit leaves the good one intact;
from the API, `memprofile export` and `memprofile run`, each with its one-line
message.

Row 10, files that are not files: `memprofile show /dev/zero`, /dev/urandom,
a FIFO with no writer, a socket, and gzip bombs (a profile's and a trace's)
are refused in one line, without hanging and with a small peak memory.

Row 11, a real profile (saved by `memprofile run`) edited: ragged timeline
columns, a step index of 2e7 and 1e12, negative and 1e30 sizes, NaN and
infinity, an op index past its labels. `Profile.from_json`, `memprofile.load`,
`memprofile show`, `export` and `compare` say in one line which field is
wrong, exit non-zero, and stay small.

The CLI runs in a child process whose peak resident memory is read from its
own rusage (os.wait4), under an address-space limit of 4 GiB so that the code
before the fix failed with a MemoryError instead of eating the machine.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import memprofile
from memprofile import Profile
from memprofile.errors import OutputPathError, ProfileFormatError
from tests.builders import make_profile, make_rich_profile

ROOT = Path(__file__).resolve().parents[2]
PEAK_LIMIT_MB = 400
ADDRESS_SPACE = 4 << 30

TRAIN = """\
import torch
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters())
for _ in range(6):
    loss = model(torch.randn(32, 64)).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
print("trained")
"""


@dataclass
class Ran:
    rc: int
    out: str
    err: str
    peak_mb: float


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def memprofile_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 120, limit_memory: bool = True) -> Ran:
    """`python -m memprofile ARGS` in a child (see python_child)."""
    return python_child("-m", "memprofile", *args, cwd=cwd, timeout=timeout, limit_memory=limit_memory)


#: Runs `python -m MODULE ARGS` or `python -c CODE ARGS` and, at exit, writes its own peak resident
#: memory (VmHWM, which exec starts afresh; a child's ru_maxrss also counts the resident memory its
#: parent had when it forked: a 1 GB pytest made every child "1006 MB").
HWM_WRAPPER = """
import atexit, os, runpy, sys
def _hwm():
    with open(os.environ["MEMPROFILE_TEST_HWM"], "w") as f:
        f.write(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
atexit.register(_hwm)
mode, target, *rest = sys.argv[1:]
if mode == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def python_child(*args: str | Path, cwd: Path | None = None, timeout: float = 120, limit_memory: bool = True) -> Ran:
    """`python ARGS` (-m MODULE ... or -c CODE ...) in a child: its exit
    status, output and peak resident memory. Even what reads a device runs
    in a child: without the fix it reads /dev/zero until memory ends."""
    workdir = Path(cwd or ROOT)
    # The child's output files are the test's own: in the checkout they would be shared by
    # every pytest-xdist worker (one read another's stderr).
    scratch = Path(tempfile.mkdtemp(prefix="memprofile-child-"))
    hwm = scratch / ".cli.hwm"
    env = {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PYTHONPATH": str(ROOT / "pyext"),
        "MEMPROFILE_TEST_HWM": str(hwm),
    }
    with open(scratch / ".cli.out", "w+") as out, open(scratch / ".cli.err", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", HWM_WRAPPER, *map(str, args)],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
            preexec_fn=_limit_address_space if limit_memory else None,
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                pytest.fail(f"memprofile {' '.join(map(str, args))} still ran after {timeout} s (it hangs)")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # (no file: it died before its exit handlers; then its rusage, an upper bound)
        peak_kib = int(hwm.read_text()) if hwm.exists() else usage.ru_maxrss
        ran = Ran(proc.returncode, out.read(), err.read(), peak_kib / 1024)
    shutil.rmtree(scratch, ignore_errors=True)
    return ran


def assert_one_line_refusal(ran: Ran, *says: str) -> None:
    """Exit status 1, one line on stderr saying `says`, no traceback, small."""
    assert ran.rc == 1, (ran.rc, ran.err[-2000:])
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in ran.err, ran.err[-2000:]
    assert lines[0].startswith("memprofile: "), lines
    for text in says:
        assert text in lines[0], lines[0]
    assert ran.peak_mb < PEAK_LIMIT_MB, f"{ran.peak_mb:.0f} MB peak resident memory"


# -- row 8: a full disk --------------------------------------------------------------------------

# (the full_disk fixture: tests/reliability/conftest.py)


def _big_profile() -> Profile:
    """A profile whose file is larger than the disk, also gzipped (its timelines are noise)."""
    profile = make_rich_profile(n_points=12_000)
    rng = random.Random(27)
    for timeline in profile.timelines:
        timeline.live_bytes = [rng.randrange(1 << 40) for _ in timeline.t]
    assert len(gzip.compress(profile.to_json().encode())) > 128 << 10
    return profile


def test_the_tiny_disk_really_fails_a_write_part_way(full_disk):
    with pytest.raises(OSError) as info, open(full_disk / "probe", "wb") as f:
        f.write(b"x" * (200 << 10))
    assert info.value.errno == 28
    assert (full_disk / "probe").stat().st_size > 0  # a plain write leaves this partial file behind
    (full_disk / "probe").unlink()


@pytest.mark.parametrize("name", ["p.json", "p.json.gz"])
def test_a_profile_that_does_not_fit_leaves_no_file(full_disk, name):
    with pytest.raises(OutputPathError, match="the disk is full") as info:
        _big_profile().save(full_disk / name)
    assert "\n" not in str(info.value)
    assert list(full_disk.iterdir()) == []


def test_a_report_that_does_not_fit_leaves_no_file(full_disk):
    with pytest.raises(OutputPathError, match="the disk is full"):
        _big_profile().save_html(full_disk / "report.html")
    assert list(full_disk.iterdir()) == []


@pytest.mark.parametrize("name", ["p.json", "p.json.gz"])
def test_overwriting_a_good_profile_with_one_that_does_not_fit_keeps_the_good_one(full_disk, name):
    good = make_profile(n_points=20, name="good")
    good.save(full_disk / name)
    before = (full_disk / name).read_bytes()
    with pytest.raises(OutputPathError, match="the disk is full"):
        _big_profile().save(full_disk / name)
    assert [p.name for p in full_disk.iterdir()] == [name]
    assert (full_disk / name).read_bytes() == before
    assert memprofile.load(full_disk / name) == good


def test_export_to_a_full_disk_says_so_and_keeps_the_old_report(full_disk, tmp_path):
    source = tmp_path / "big.json"
    _big_profile().save(source)
    old = full_disk / "report.html"
    old.write_text("<html>the report from before</html>")
    ran = memprofile_cli("export", source, "-o", old, cwd=tmp_path)
    assert_one_line_refusal(ran, "the disk is full", str(old))
    assert [p.name for p in full_disk.iterdir()] == ["report.html"]
    assert old.read_text() == "<html>the report from before</html>"


def test_memprofile_run_onto_a_full_disk_leaves_no_partial_file(full_disk, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    bare = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    ran = memprofile_cli("run", "--out", full_disk, script, cwd=tmp_path, limit_memory=False, timeout=300)
    assert ran.out == bare.stdout == "trained\n"
    # The script succeeded, its outputs could not all be written: the exit status is the script's own, or 1
    # (cli.py decides which; either way the message says why, in one line).
    assert ran.rc in (bare.returncode, 1) and "Traceback" not in ran.err, ran.err[-2000:]
    assert "the disk is full" in ran.err
    # What is there is whole (the small gzip profile fits; the 2 MB report does not, and is not there at all).
    left = sorted(p.name for p in full_disk.iterdir())
    assert not [n for n in left if n.endswith(".tmp") or n.startswith(".")], left
    assert not [n for n in left if n.endswith(".html")], left
    for name in left:
        assert memprofile.load(full_disk / name).name == "train"


# -- row 10: files that are not files ----------------------------------------------------------


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "profile.json"
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path):
    path = tmp_path / "profile.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    yield path
    server.close()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_show_refuses_a_character_device_in_one_line(device):
    assert_one_line_refusal(memprofile_cli("show", device), device, "it is a character device, not a file")


def test_show_and_export_refuse_a_fifo_without_hanging(fifo, tmp_path):
    assert_one_line_refusal(memprofile_cli("show", fifo, timeout=60), "it is a FIFO (named pipe), not a file")
    ran = memprofile_cli("export", fifo, "-o", tmp_path / "r.html", timeout=60)
    assert_one_line_refusal(ran, "it is a FIFO (named pipe), not a file")
    assert not (tmp_path / "r.html").exists()


def test_show_refuses_a_socket_in_one_line(unix_socket):
    assert_one_line_refusal(memprofile_cli("show", unix_socket, timeout=60), "it is a socket, not a file")


def test_show_refuses_a_folder_in_one_line(tmp_path):
    assert_one_line_refusal(memprofile_cli("show", tmp_path), "it is a folder, not a file")


LOAD = """
import sys
import tempfile
import memprofile
try:
    memprofile.load(sys.argv[1])
except memprofile.ProfileFormatError as exc:
    print(f"refused: {exc}")
"""


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "fifo", "socket"])
def test_load_refuses_what_is_not_a_file(path, fifo, unix_socket):
    target = {"fifo": fifo, "socket": unix_socket}.get(path, path)
    ran = python_child("-c", LOAD, target, timeout=60)
    assert ran.rc == 0 and ran.out.startswith("refused: ") and "not a file" in ran.out, (ran.out, ran.err[-2000:])
    assert ran.peak_mb < PEAK_LIMIT_MB


def test_import_refuses_a_device_and_a_fifo(fifo):
    assert_one_line_refusal(memprofile_cli("import", "/dev/zero", timeout=60), "character device, not a file")
    assert_one_line_refusal(memprofile_cli("import", fifo, timeout=60), "FIFO (named pipe), not a file")


def _gzip_bomb(path: Path, inflated_mib: int) -> Path:
    """Gzip of a trace's first bytes and `inflated_mib` MiB of spaces (JSON
    whitespace), about a thousandth of that size."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b'{"traceEvents": [')
        block = b" " * (1 << 20)
        for _ in range(inflated_mib):
            f.write(block)
    return path


def test_show_refuses_a_gzip_bomb_within_a_small_peak(tmp_path):
    bomb = _gzip_bomb(tmp_path / "bomb.json.gz", 1024)
    assert_one_line_refusal(memprofile_cli("show", bomb), "inflates to more than")


def test_import_refuses_a_gzip_bomb_within_a_small_peak(tmp_path):
    bomb = _gzip_bomb(tmp_path / "trace.json.gz", 1024)
    assert bomb.stat().st_size < 2 << 20
    assert_one_line_refusal(memprofile_cli("import", bomb), "inflates to more than")


# -- row 11: a real profile, edited ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_profile(tmp_path_factory) -> dict:
    """The JSON of a profile `memprofile run` saved of a 6-step torch training loop."""
    folder = tmp_path_factory.mktemp("real")
    (folder / "train.py").write_text(TRAIN)
    ran = memprofile_cli(
        "run", "-o", folder / "train.memprofile.json", folder / "train.py", cwd=folder, limit_memory=False, timeout=300
    )
    assert ran.rc == 0, ran.err[-3000:]
    data = json.loads((folder / "train.memprofile.json").read_text())
    allocator = next(i for i, t in enumerate(data["timelines"]) if t["by_category"] and t["op"])
    assert len(data["steps"]) == 6 and len(data["timelines"][allocator]["t"]) > 20
    data["_allocator"] = allocator
    return data


A = "ALLOCATOR"  # in a path: the index of the allocator's timeline
POP = object()  # as the value: remove the path's last item (a column one point short)
#: name -> (path, new value or POP, what the one-line error says: the field, and its value)
EDITS = {
    "ragged category column": (
        ("timelines", A, "by_category", "activation"),
        POP,
        "timelines[A].by_category.activation: ",
    ),
    "ragged t column": (("timelines", A, "t"), POP, "timelines[A].live_bytes: "),
    "ragged op column": (("timelines", A, "op"), POP, "timelines[A].op: "),
    "step index 2e7": (("steps", 2, "index"), 20_000_000, "steps[2].index: 20,000,000"),
    "step index 1e12": (("steps", 2, "index"), 10**12, "steps[2].index: 1,000,000,000,000"),
    "negative peak": (("devices", 0, "peak_bytes"), -5, "devices[0].peak_bytes: -5"),
    "negative live bytes": (("timelines", A, "live_bytes", 10), -(10**9), "timelines[A].live_bytes[10]: -1,000,"),
    "peak of 1e30 (an integer)": (("devices", 0, "peak_bytes"), 10**30, "devices[0].peak_bytes: 1e+30"),
    "peak of 1e30 (a float)": (("peak", "bytes"), 1e30, "peak.bytes: expected an integer"),
    "live bytes of 1e30": (("timelines", A, "live_bytes", 3), 10**30, "timelines[A].live_bytes[3]: 1e+30"),
    "time of 1e30": (("timelines", A, "t", 10), 1e30, "timelines[A].t[10]: 1e+30"),
    "NaN duration": (("duration_s",), float("nan"), "duration_s: not a finite number"),
    "infinite time": (("peak", "time_s"), float("inf"), "peak.time_s: not a finite number"),
    "op index past its labels": (("timelines", A, "op", 10), 10**6, "timelines[A].op[10]: 1,000,000"),
    "phase index past the phases": (("timelines", A, "phase", 10), 7, "timelines[A].phase[10]: 7"),
}


def _edited(real_profile: dict, case: str) -> tuple[str, str]:
    """(the edited profile's JSON, what its error must say)."""
    data = copy.deepcopy(real_profile)
    allocator = data.pop("_allocator")
    path, value, says = EDITS[case]
    *parents, last = [allocator if key == A else key for key in path]
    target = data
    for key in parents:
        target = target[key]
    if value is POP:
        target[last].pop()
    else:
        target[last] = value
    return json.dumps(data), "profile." + says.replace("[A]", f"[{allocator}]")


@pytest.mark.parametrize("case", list(EDITS))
def test_from_json_names_the_bad_field(real_profile, case):
    text, field = _edited(real_profile, case)
    with pytest.raises(ProfileFormatError) as info:
        Profile.from_json(text)
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", list(EDITS))
def test_show_and_export_name_the_bad_field_in_one_line(real_profile, case, tmp_path):
    text, field = _edited(real_profile, case)
    path = tmp_path / "edited.json"
    path.write_text(text)
    with pytest.raises(ProfileFormatError, match="edited.json: "):
        memprofile.load(path)
    assert_one_line_refusal(memprofile_cli("show", path), field)
    assert_one_line_refusal(memprofile_cli("export", path, "-o", tmp_path / "r.html"), field)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("case", ["ragged category column", "step index 2e7"])
def test_compare_names_the_bad_field_in_one_line(real_profile, case, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({k: v for k, v in real_profile.items() if k != "_allocator"}))
    text, field = _edited(real_profile, case)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert_one_line_refusal(memprofile_cli("compare", good, bad), field)


def test_the_real_profile_itself_still_loads_and_shows(real_profile, tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps({k: v for k, v in real_profile.items() if k != "_allocator"}))
    assert memprofile.load(path).name == "train"
    ran = memprofile_cli("show", path)
    assert ran.rc == 0 and "train" in ran.out, ran.err[-2000:]
