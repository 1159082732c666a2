"""The step window the integrations' callbacks share (memprofile/integrations/_window.py),
driven as a callback drives it, with the real Profiler: which steps start and stop the
profile, what it says when it cannot profile, where it writes, and the notebook's path
for a run that raises where no callback hears it. No framework runs here (host memory
only): the callbacks themselves run in test_examples.py."""

from __future__ import annotations

import sys

import pytest

import memprofile
from memprofile.integrations._window import StepWindow, parse_steps


@pytest.mark.parametrize(
    "given, expected",
    [((1, 3), (1, 3)), ([2, 5], (2, 5)), (4, (4, 4)), ("2-7", (2, 7)), (" 3 ", (3, 3))],
)
def test_steps_are_read_in_every_form(given, expected):
    # GIVEN a window as a user writes it WHEN it is read THEN it is (first, last), 1-based
    assert parse_steps(given) == expected


@pytest.mark.parametrize("given", [0, (3, 1), (0, 2), "a-b", "3-", (1.0, 2), True, (1, 2, 3), None])
def test_bad_steps_say_what_is_taken(given):
    # GIVEN a window no run has WHEN a callback is made with it THEN the error shows the forms taken
    with pytest.raises(ValueError, match=r"steps takes the training steps to profile, 1-based"):
        StepWindow("cb", given)


def _run(window: StepWindow, steps: int) -> None:
    """A run of `steps` steps as a framework's callback hooks see it."""
    window.run_begins()
    for step in range(1, steps + 1):
        window.step_begins(step)
        window.steps_ended(step)
    window.run_ends()


def test_the_window_profiles_its_steps_and_each_run_gets_one(tmp_path, fresh_store):
    # GIVEN a window over steps 2-3 writing to a folder
    window = StepWindow("cb", (2, 3), out=tmp_path / "profiles", name="fit")
    hook = sys.excepthook
    started: list[int] = []
    window.run_begins()
    # WHEN a run of 5 steps goes by
    for step in range(1, 6):
        if window.step_begins(step):
            started.append(step)
        window.steps_ended(step)
    window.run_ends()
    # THEN the profile ran in steps 2 and 3 only, says so, is stored and written as `memprofile run` names it
    assert started == [2, 3]
    assert window.profile is not None and window.profile.capture["steps"] == "2-3"
    assert memprofile.last() is window.profile
    assert window.saved_path == tmp_path / "profiles" / "fit.memprofile.json.gz"
    assert memprofile.load(window.saved_path).capture["steps"] == "2-3"  # the file says it too
    # AND what it hooked while the window ran (the exception hook, IPython's post_run_cell) is as it was
    assert sys.excepthook is hook and window._unhook == []
    # AND a second run (another fit() call) gets its own profile
    _run(window, 5)
    assert len(window.profiles) == 2 and window.profiles[1] is window.profile


def test_a_run_that_ends_before_the_window_says_so(capsys):
    # GIVEN a window over steps 5-6 WHEN the run ends after 3 steps
    window = StepWindow("MemprofileCallback (test)", (5, 6))
    _run(window, 3)
    # THEN nothing was profiled, and one line says which steps ran
    assert window.profile is None
    assert "MemprofileCallback (test) profiled nothing: the run's steps were 1-3, and steps 5-6 were asked for" in (
        capsys.readouterr().err
    )


def test_a_run_that_stops_inside_the_window_keeps_what_ran(fresh_store):
    # GIVEN a window over steps 2-10 WHEN the run stops after its step 4 (early stopping, max_steps)
    window = StepWindow("cb", (2, 10))
    _run(window, 4)
    # THEN the profile holds steps 2-4, and nothing is left running
    assert window.profile is not None and window.profile.capture["steps"] == "2-4"
    assert not window.running


def test_inside_another_profile_it_says_so_once_and_profiles_nothing(capsys, fresh_store):
    # GIVEN a window, in a run that a profile (the %%memprofile cell, `memprofile run`) already profiles
    window = StepWindow("MemprofileCallback (test)", (1, 2))
    with memprofile.profile(name="outer") as outer:
        # WHEN two runs go by
        _run(window, 3)
        _run(window, 3)
    # THEN it profiled nothing, said so once, and the outer profile is whole
    said = capsys.readouterr().err
    assert window.profile is None and window.profiles == []
    assert said.count("MemprofileCallback (test) does not profile steps 1-2: profile 'outer'") == 1
    assert outer.error is None and memprofile.last() is outer


def test_one_file_for_a_rank_is_refused(monkeypatch, tmp_path):
    # GIVEN a rank of a torchrun job WHEN its callback is told to write one file
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # THEN it refuses before the run, and says to give a folder
    with pytest.raises(ValueError, match=r"each rank of this job \(rank 1 of 2\) writes its own: give a folder"):
        StepWindow("cb", out=tmp_path / "p.json.gz")


def test_an_out_that_cannot_be_written_is_said_before_the_run(tmp_path):
    # GIVEN a file in a folder that does not exist, and a folder under a file
    (tmp_path / "file").write_text("")
    # WHEN a callback is made with them THEN each is refused with the path at fault
    with pytest.raises(ValueError, match="does not exist"):
        StepWindow("cb", out=tmp_path / "missing" / "p.html")
    with pytest.raises(ValueError, match="is not a writable folder"):
        StepWindow("cb", out=tmp_path / "file" / "profiles")


@pytest.mark.slow  # the HTML report: ~2 s
def test_a_file_out_gets_the_profile_or_the_report(tmp_path, fresh_store):
    # GIVEN windows writing a .json.gz and an .html WHEN their runs end
    for name in ("p.json.gz", "report.html"):
        window = StepWindow("cb", (1, 1), out=tmp_path / name)
        _run(window, 2)
        # THEN each wrote its file there
        assert window.saved_path == tmp_path / name and (tmp_path / name).stat().st_size > 0
    assert memprofile.load(tmp_path / "p.json.gz").capture["steps"] == "1"
    assert "<html" in (tmp_path / "report.html").read_text()[:2000].lower()


def test_a_notebook_cell_that_raises_in_the_window_ends_the_profile_with_it(names_back, fresh_store):
    # GIVEN a notebook cell whose training raises in its step 2, inside the window (1-3),
    # with no framework hook that hears of it (a Hugging Face Trainer tells its callbacks nothing)
    ip = names_back
    ip.user_ns["StepWindow"] = StepWindow
    cell = (
        "window = StepWindow('cb', (1, 3))\n"
        "window.run_begins()\n"
        "for step in range(1, 6):\n"
        "    window.step_begins(step)\n"
        "    if step == 2:\n"
        "        raise MemoryError('out of memory in step 2')\n"
        "    window.steps_ended(step)\n"
    )
    # WHEN the cell runs
    result = ip.run_cell(cell)
    # THEN the profile ended with the cell, holding the error and the steps that ran, and nothing runs on
    window = ip.user_ns["window"]
    assert isinstance(result.error_in_exec, MemoryError)
    assert window.profile is not None and not window.running
    assert window.profile.error.type == "MemoryError" and window.profile.capture["steps"] == "1-2"
    assert after_cell_hooks(ip) == 0


def after_cell_hooks(ip) -> int:
    return sum(
        1 for f in ip.events.callbacks["post_run_cell"] if getattr(f, "__qualname__", "").startswith("StepWindow")
    )


@pytest.mark.slow  # a subprocess
def test_importing_the_integrations_imports_no_framework():
    # GIVEN a fresh interpreter WHEN memprofile and memprofile.integrations are imported
    import subprocess

    code = (
        "import sys, memprofile, memprofile.integrations\n"
        "print(sorted(m for m in ('transformers', 'lightning', 'pytorch_lightning', 'keras', 'tensorflow', 'torch')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # THEN no framework was imported
    assert out.strip() == "[]"


def test_out_may_be_a_url(fresh_store):
    # GIVEN windows writing to an object store (fsspec's in-memory one; s3://, gs://, ... alike)
    pytest.importorskip("fsspec")
    for out, written in [
        ("memory://integrations/profiles", "memory://integrations/profiles/fit.memprofile.json.gz"),
        ("memory://integrations/one.json.gz", "memory://integrations/one.json.gz"),
    ]:
        window = StepWindow("cb", (1, 2), out=out, name="fit")
        # WHEN a run goes by
        _run(window, 3)
        # THEN the profile is there, as in a local folder or file, and reads back
        assert str(window.saved_path) == written
        assert memprofile.load(written).capture["steps"] == "1-2"


def test_a_framework_that_calls_back_every_k_steps_rounds_the_window_out(fresh_store):
    # GIVEN a window over steps 7-10, in a run that calls back once per 4 steps (Keras's steps_per_execution)
    window = StepWindow("cb", (7, 10))
    window.run_begins()
    started = []
    # WHEN the run's executions (steps 1-4, 5-8, 9-12, 13-16) go by
    for first in (1, 5, 9, 13):
        if window.step_begins(first, span=4):
            started.append(first)
        window.steps_ended(first + 3)
    window.run_ends()
    # THEN the profile ran in the executions that hold the window's steps, and says which steps they were
    assert started == [5, 9]
    assert window.profile is not None and window.profile.capture["steps"] == "5-12"
