"""`memprofile run` as users run it: a script or -m module, its arguments and exit
status kept; under a launcher's RANK/WORLD_SIZE one rank file each; `memprofile merge`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import memprofile

#: Each test runs `memprofile run` in subprocesses: the full tier's, not --fast's.
pytestmark = pytest.mark.slow


def _cli(*args, cwd, env=None):
    full = {**os.environ, **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        if not env or key not in env:
            full.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "memprofile.cli", *args], cwd=cwd, capture_output=True, text=True, env=full, timeout=300
    )


def test_a_module_with_its_arguments_and_exit_status(tmp_path):
    pkg = tmp_path / "trainpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text("import sys\nbuf = bytearray(48 * 2**20)\nprint('argv', sys.argv[1:])\nsys.exit(3)\n")
    out = _cli("run", "--out", "prof", "-m", "trainpkg.train", "--lr", "3", "-m", "x", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "argv ['--lr', '3', '-m', 'x']" in out.stdout  # after the module, everything is the module's
    profile = memprofile.load(tmp_path / "prof" / "train.memprofile.json.gz")
    assert "buf = bytearray" in profile.source and profile.error.type == "SystemExit"
    assert (tmp_path / "prof" / "train.memprofile.html").stat().st_size > 10_000
    assert f"profile written to {tmp_path / 'prof' / 'train.memprofile.json.gz'}" in out.stderr  # absolute


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["run"], {}, "give a script or -m MODULE"),
        (["run", "nope.py"], {}, "no such script: nope.py"),
        (["run", "-o", "x.json", "s.py"], {"RANK": "0", "WORLD_SIZE": "2"}, "use --out DIR"),
    ],
)
def test_usage_errors_say_so_before_running(tmp_path, monkeypatch, capsys, args, env, says):
    """In-process: a usage error is decided before anything runs (no subprocess needed to prove it)."""
    from memprofile import cli

    (tmp_path / "s.py").write_text("open('ran', 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse's own usage errors exit
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and says in err
    if args == ["run"]:
        assert "usage:" in err
    assert "ran" not in os.listdir(tmp_path)


def test_a_module_takes_the_rest_and_out_is_not_output(tmp_path):
    (tmp_path / "s.py").write_text("open('ran', 'w').close()\n")
    both = _cli("run", "-m", "json.tool", "s.py", cwd=tmp_path)  # s.py is json.tool's argument here
    assert "ran" not in os.listdir(tmp_path)
    assert both.returncode != 0
    # --out is not taken for an abbreviation of --output
    out = _cli("run", "--out", "d", "s.py", cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / "d" / "s.memprofile.json.gz").exists()


def test_ranks_write_their_files_and_merge_reads_them(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import os\nkeep = bytearray((1 + 40 * int(os.environ['RANK'] == '1')) * 2**20)\n")
    env = {"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "run9"}
    for rank in (0, 1):
        out = _cli("run", "job.py", cwd=tmp_path, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
        assert out.returncode == 0, out.stderr
        assert f"memprofile: rank {rank}/2: 'job': peak" in out.stderr
        assert len(out.stderr.strip().splitlines()) == (2 if rank == 0 else 1)  # one line each, no summary
    folder = tmp_path / "memprofile-run9"
    assert sorted(p.name for p in folder.iterdir()) == ["job.rank0.memprofile.json.gz", "job.rank1.memprofile.json.gz"]
    one = memprofile.load(folder / "job.rank1.memprofile.json.gz").distributed
    assert (one.rank, one.world_size, one.local_rank, one.run_id, one.backend) == (1, 2, 1, "run9", "")
    merged = _cli("merge", str(folder), cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert "rank 1 peaks highest" in merged.stdout
    assert (folder / "job.merged.memprofile.html").exists()
    to_json = _cli(
        "merge",
        str(folder / "job.rank0.memprofile.json.gz"),
        str(folder / "job.rank1.memprofile.json.gz"),
        "-o",
        "m.json.gz",
        cwd=tmp_path,
    )
    assert to_json.returncode == 0 and memprofile.load(tmp_path / "m.json.gz").merged.highest == 1
    bad = _cli("merge", str(tmp_path), cwd=tmp_path)
    assert bad.returncode == 1 and "holds no rank profiles" in bad.stderr


def test_a_rank_stopped_by_the_launcher_still_writes_its_profile(tmp_path):
    """torchrun stops the other ranks with SIGTERM when one fails: their profiles are kept."""
    import signal
    import time

    (tmp_path / "slow.py").write_text(
        "import time\nkeep = bytearray(8 * 2**20)\nopen('started', 'w').close()\ntime.sleep(120)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")}
    env.update(RANK="1", WORLD_SIZE="2", TORCHELASTIC_RUN_ID="t")
    proc = subprocess.Popen(
        [sys.executable, "-m", "memprofile.cli", "run", "slow.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err  # it ends by SIGTERM, as it would bare
    profile = memprofile.load(tmp_path / "memprofile-t" / "slow.rank1.memprofile.json.gz")
    assert profile.error.type == "SystemExit" and profile.rank == 1


def test_a_scripts_lines_inside_its_functions_are_its_lines(tmp_path):
    """A script's work usually runs in main(): allocations get the line in main() that made them,
    and the script stays itself (its docstring, __main__ classes picklable)."""
    (tmp_path / "train.py").write_text('''"""Train a tiny model."""
import pickle
import torch


class Config:
    size = 1024


def main():
    weights = torch.zeros(Config.size, Config.size)
    big = torch.ones(4 * Config.size, Config.size)
    assert pickle.loads(pickle.dumps(Config())).size == 1024
    print("doc:", __doc__)
    return weights, big


if __name__ == "__main__":
    main()
''')
    out = _cli("run", "train.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "doc: Train a tiny model." in out.stdout
    profile = memprofile.load(tmp_path / "train.memprofile.json.gz")
    rows = {row.line: row for row in profile.lines}
    assert rows[12].allocated_bytes == 16 * 2**20 and "torch.ones" in rows[12].text
    assert rows[11].allocated_bytes == 4 * 2**20
    assert profile.peak.line == 12 or profile.peak.by_line.get(12) == 16 * 2**20


def test_a_scripts_models_and_optimizers_are_found_and_no_notebook_advice(tmp_path):
    """The profile stops while the script's globals still exist (its model, its optimizer by name);
    what a finished script keeps is freed with its process: no 'memory the notebook keeps' advice."""
    (tmp_path / "fit.py").write_text(
        "import torch\n"
        "net = torch.nn.Sequential(torch.nn.Conv1d(4, 64, 3), torch.nn.ReLU(), torch.nn.Flatten(),"
        " torch.nn.Linear(64 * 30, 8))\n"
        "sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)\n"
        "for _ in range(2):\n"
        "    net(torch.randn(32, 4, 32)).sum().backward()\n"
        "    sgd.step()\n"
        "leftover = torch.ones(32 * 2**20 // 4)\n"
    )
    out = _cli("run", "--detail-steps", "all", "fit.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    profile = memprofile.load(tmp_path / "fit.memprofile.json.gz")
    (opt,) = profile.optimizers
    assert (opt.name, opt.type, opt.steps, opt.models) == ("sgd", "SGD", 2, ["net"])
    params = sum(layer.parameter_bytes for layer in profile.layers)
    assert params == (4 * 64 * 3 + 64 + 64 * 30 * 8 + 8) * 4
    assert any(k.name == "leftover" for k in profile.kept)
    assert "notebook_leak" not in [s.id for s in profile.suggestions]
    assert profile.capture["script"] == "fit.py"


def test_a_rank_that_peaks_after_its_detailed_steps_is_flagged_in_the_merge(tmp_path):
    """Steps after the detail are read cheaply (resident memory): a rank whose buffer comes in step 5
    is not higher by its detailed allocator peak, and the merge says so and how to compare it."""
    (tmp_path / "loop.py").write_text(
        "import os, torch\n"
        "net = torch.nn.Linear(256, 256)\n"
        "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
        "held = []\n"
        "for step in range(1, 7):\n"
        "    net(torch.randn(64, 256)).sum().backward()\n"
        "    opt.step()\n"
        "    if step == 5 and os.environ['RANK'] == '1':\n"
        "        held.append(torch.ones(160 * 2**20 // 4))\n"
    )
    env = {"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "late"}
    for rank in (0, 1):
        out = _cli("run", "loop.py", cwd=tmp_path, env={**env, "RANK": str(rank)})
        assert out.returncode == 0, out.stderr
    merged = memprofile.merge(tmp_path / "memprofile-late")
    late = merged.merged.ranks[1]
    # The buffer comes after step 5's optimizer step: in step 6 by the step clock (steps end at
    # optimizer.step()). Short steps are read in groups: "step 6" or "one of steps 5-6".
    assert re.search(r"\bsteps? (?:5-)?6\b", late.outside_detail), late.outside_detail
    assert "peaked above every detailed step" in late.outside_detail
    own = memprofile.load(tmp_path / "memprofile-late" / "loop.rank1.memprofile.json.gz")
    fixes = [n.fix for n in own.warnings if n.code == "step_above_detail"]
    window = re.fullmatch(r"memprofile run --detail-steps (\d+)(?:-(\d+))? loop\.py", fixes[0])  # not %%memprofile
    assert window and int(window[1]) <= 6 <= int(window[2] or window[1]), fixes
    assert late.process_peak_bytes - merged.merged.ranks[0].process_peak_bytes > 100 * 2**20
    note = next(n for n in merged.warnings if n.code == "ranks_above_detail")
    assert note.message.startswith("rank(s) 1 peaked outside their detailed steps") and "--detail-steps" in note.fix
    from memprofile.render.text import render_text

    assert "(peaked outside its detailed steps)" in render_text(merged)
