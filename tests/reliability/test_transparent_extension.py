"""Issue 27, rows 15 and 16: the extension's own state against what a user
can do to it. Row 15: `--interval inf` (and other intervals no sampler can
wait for) killed the sampler thread with an OverflowError traceback in the
cell; now the magic says so and prints its usage, like any bad option.
Row 16: after `del sys.modules['memprofile…']` every later `%%memprofile`
failed (`TypeError: cannot unpack non-iterable DetailWindow object`: a
second copy of a module with classes of its own) and `%reload_ext` lost the
stored profiles. Each in a fresh process (they change the process's modules)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SHELL = textwrap.dedent("""
    import json, sys
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    import memprofile

    def cell(text):
        r = ip.run_cell(text)
        return repr(r.error_in_exec or r.error_before_exec) if not r.success else None
""")


def _child(body: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SHELL + textwrap.dedent(body)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": json.loads(done.stdout.strip().splitlines()[-1]), "stdout": done.stdout, "stderr": done.stderr}


INTERVALS = ["inf", "1e300", "nan", "-5", "0", "1e12"]


def test_an_interval_no_sampler_can_wait_for_is_a_usage_error():
    # GIVEN one shell (one child process) that tries each bad interval in turn, then a plain profiled cell
    r = _child(f"""
        out = {{}}
        for interval in {INTERVALS!r}:
            ip.user_ns.pop("x", None)
            ip.user_ns.pop("y", None)
            error = cell(f"%%memprofile -q --interval {{interval}}\\nx = 1\\n")
            after = cell("%%memprofile -q\\ny = 2\\n")
            out[interval] = {{"error": error, "after": after, "profiles": len(memprofile.profiles()),
                             "y": ip.user_ns.get("y"), "x": ip.user_ns.get("x")}}
        print(json.dumps(out))
    """)
    assert list(r["out"]) == INTERVALS, r["out"]
    for n, (interval, out) in enumerate(r["out"].items(), 1):
        # THEN the cell does not run, the magic says why (usage)
        assert out["error"] is not None and "interval" in out["error"], (interval, out)
        assert out["x"] is None, (interval, out)
        # AND the next cell profiles as usual (one more profile after each)
        assert out["after"] is None and out["y"] == 2 and out["profiles"] == n, (interval, out)
    # AND nothing overflowed or died in a thread
    assert "OverflowError" not in r["stdout"] + r["stderr"]
    assert "Traceback" not in r["stderr"] and "Exception in thread" not in r["stderr"]


def test_an_interval_no_sampler_can_wait_for_is_refused_by_the_api():
    r = _child("""
        try:
            with memprofile.profile(host_interval_s=float("inf")):
                pass
            said = None
        except ValueError as exc:
            said = str(exc)
        print(json.dumps({"said": said}))
    """)
    assert r["out"]["said"] and "interval" in r["out"]["said"]
    assert "Exception in thread" not in r["stderr"]


@pytest.mark.parametrize("removed", ["memprofile.capture.base", "memprofile.store", "all"])
def test_profiles_go_on_after_memprofiles_modules_are_deleted(removed):
    r = _child(f"""
        cell("import torch")
        cell("%%memprofile -q -n first\\na = torch.ones(1000)\\n")
        names = [n for n in sys.modules if n == "memprofile" or n.startswith("memprofile.")]
        for name in (names if "{removed}" == "all" else ["{removed}"]):
            del sys.modules[name]
        errors = [cell("%%memprofile -q -n second\\nb = torch.ones(1000)\\n")]
        errors.append(cell("%reload_ext memprofile"))
        errors.append(cell("%%memprofile -q -n third\\nc = torch.ones(1000)\\n"))
        import memprofile as again
        print(json.dumps({{"errors": errors, "names": [p.name for p in again.profiles()]}}))
    """)
    out = r["out"]
    assert out["errors"] == [None, None, None], out
    # AND the profiles stored before are still there, with the new ones
    assert out["names"] == ["first", "second", "third"], out


def test_a_terminals_stderr_stays_a_terminal_while_torch_records():
    """torch's "Memory block of unknown size" lines are filtered through a file
    (row 18); a terminal's fd 2 is left alone: code asks isatty(2) for colours
    and progress bars, and gets the answer it gets bare."""
    pytest.importorskip("torch")
    import os
    import pty

    script = textwrap.dedent("""
        import os, sys, torch, memprofile
        bare = os.isatty(2)
        with memprofile.profile(name="tty", store=False):
            inside = os.isatty(2)
            torch.ones(10)
        print(bare, inside)
    """)
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 0
    assert done.stdout.split() == ["True", "True"]


def test_a_script_that_deletes_memprofiles_modules_is_profiled_under_run(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "delmods.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        import torch
        x = torch.ones(1000)
        for k in [k for k in sys.modules if k == "memprofile" or k.startswith("memprofile.")]:
            del sys.modules[k]
        y = torch.ones(2000)
        print("script done")
    """)
    )
    bare = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    out = tmp_path / "p.json"
    done = subprocess.run(
        [sys.executable, "-m", "memprofile", "run", "-o", str(out), str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (done.returncode, done.stdout) == (bare.returncode, bare.stdout), done.stderr[-2000:]
    from memprofile import load

    lines_seen = {s.line for s in load(out).lines}
    assert {4, 7} <= lines_seen, lines_seen
