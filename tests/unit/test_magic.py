"""%%memprofile and %memprofile in a real IPython InteractiveShell."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from memprofile.render.bundle import MIME_TYPE


@pytest.fixture
def displayed(ip, monkeypatch):
    """Every bundle the shell displays, as IPython's display publisher gets it."""
    seen: list[dict] = []
    monkeypatch.setattr(ip.display_pub, "publish", lambda data, metadata=None, **kw: seen.append(data))
    return seen


def test_cell_runs_as_ipython_would(ip, fresh_store, displayed):
    # GIVEN a cell that defines variables, uses a magic and ends in an expression
    result = ip.run_cell("%%memprofile --name step\nimport numpy as np\nxs = np.ones(10**6)\n%time s = 1\nxs.sum()")
    # THEN variables persist, the value is the cell's result, the profile is shown
    assert result.success, result.error_in_exec
    assert result.result == 10**6
    assert ip.user_ns["xs"].shape == (10**6,) and ip.user_ns["s"] == 1
    (bundle,) = [d for d in displayed if MIME_TYPE in d]
    assert bundle[MIME_TYPE]["name"] == "step"
    assert {"text/html", "text/plain"} <= set(bundle)
    assert fresh_store.last().name == "step"


def test_a_raising_cell_keeps_its_profile_and_reraises(ip, fresh_store, displayed):
    result = ip.run_cell("%%memprofile\nbefore = 1\nraise ValueError('boom')\nafter = 1")
    assert isinstance(result.error_in_exec, ValueError)
    assert ip.user_ns["before"] == 1 and "after" not in ip.user_ns
    profile = fresh_store.last()
    assert profile.error.type == "ValueError" and profile.error.message == "boom"
    assert any(MIME_TYPE in d and d[MIME_TYPE]["error"]["type"] == "ValueError" for d in displayed)


def test_syntax_error_runs_nothing_and_stores_nothing(ip, fresh_store):
    result = ip.run_cell("%%memprofile\nx = (\n")
    assert isinstance(result.error_in_exec or result.error_before_exec, SyntaxError)
    assert len(fresh_store) == 0


def test_wrong_options_print_usage(ip, fresh_store, capsys):
    result = ip.run_cell("%%memprofile --bogus\nx = 1")
    assert not result.success
    err = capsys.readouterr()
    text = err.out + err.err
    assert "unrecognized arguments: --bogus" in text and "--interval MS" in text
    assert len(fresh_store) == 0
    result = ip.run_cell("%%memprofile --interval 0\nx = 1")
    assert "must be a number of milliseconds above 0" in "".join(capsys.readouterr())


def test_quiet_stores_without_display(ip, fresh_store, displayed):
    ip.run_cell("%%memprofile -q\ny = 2")
    assert len(fresh_store) == 1 and not [d for d in displayed if MIME_TYPE in d]


def test_line_commands(ip, fresh_store, displayed, tmp_path, capsys):
    ip.run_cell("%%memprofile -q -n first\na = 1")
    ip.run_cell("%%memprofile -q -n second\nb = 1")
    ip.run_cell("%%memprofile -q -n a_much_longer_profile_name_than_sixteen\nc = 1")
    ip.run_line_magic("memprofile", "list")
    out = capsys.readouterr().out
    assert "first" in out and "second" in out
    rows = [line for line in out.splitlines() if " peak " in line]
    assert len({line.index(" peak ") for line in rows}) == 1  # the columns stay aligned for long names
    ip.run_line_magic("memprofile", "clear")
    ip.run_cell("%%memprofile -q -n first\na = 1")
    ip.run_cell("%%memprofile -q -n second\nb = 1")
    ip.run_line_magic("memprofile", "show first")
    assert displayed[-1][MIME_TYPE]["name"] == "first"
    ip.run_line_magic("memprofile", f"export {tmp_path / 'r.html'}")
    assert "second" in (tmp_path / "r.html").read_text()
    ip.run_line_magic("memprofile", f"export {tmp_path / 'r.json.gz'} 0")
    import memprofile

    assert memprofile.load(tmp_path / "r.json.gz").name == "first"
    ip.run_line_magic("memprofile", "clear")
    assert len(fresh_store) == 0


@pytest.mark.parametrize(
    "line, expected",
    [
        ("", "needs a command"),
        ("frobnicate", "unknown or malformed"),
        ("export x.txt", "cannot tell the format"),
        ("show nope", "no profile"),
    ],
)
def test_bad_line_commands_say_what_to_do(ip, fresh_store, capsys, line, expected):
    ip.run_cell("%%memprofile -q\nz = 1")
    ip.run_cell(f"%memprofile {line}")
    captured = capsys.readouterr()
    assert expected in captured.out + captured.err


def test_unprofiled_cells_are_untouched_after_a_profiled_one(ip, fresh_store):
    ip.run_cell("%%memprofile -q\nw = 1")
    assert isinstance(ip, InteractiveShell)
    result = ip.run_cell("w + 1")
    assert result.result == 2


def _with_suggestions(store, name="trained"):
    from memprofile.model.profile import Suggestion
    from tests.builders import make_profile

    profile = make_profile(name=name)
    profile.suggestions = [
        Suggestion("amp", "Autocast", "activations are 71 % of the peak", "with torch.autocast('cpu'):\n    step()"),
        Suggestion(
            "tf_memory_growth",
            "Memory growth",
            "TF reserved the GPU",
            "tf.config.set_memory_growth(g, True)",
            placement="top",
            restart_kernel=True,
        ),
    ]
    store.add(profile)
    return profile


def test_insert_turns_the_cell_into_the_fix(ip, fresh_store, monkeypatch):
    profile = _with_suggestions(fresh_store)
    inputs: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: inputs.append((text, replace)))
    ip.run_cell("%memprofile insert amp")
    assert inputs[-1] == ("with torch.autocast('cpu'):\n    step()", True)
    # a fix that must precede the framework's start says so in the cell
    ip.run_cell(f"%memprofile insert tf_memory_growth {profile.id[:8]}")
    text, _ = inputs[-1]
    assert text.startswith("# memprofile (tf_memory_growth): this must run before the framework starts")
    assert text.endswith("tf.config.set_memory_growth(g, True)")


def test_insert_of_an_unknown_suggestion_names_the_known_ones(ip, fresh_store, capsys):
    _with_suggestions(fresh_store)
    ip.run_cell("%memprofile insert nope")
    out = "".join(capsys.readouterr())
    assert "no suggestion 'nope'" in out and "amp, tf_memory_growth" in out


def test_display_modes(ip, fresh_store, displayed, capsys, monkeypatch):
    pytest.importorskip("ipywidgets")
    from memprofile.jupyter import display as modes
    from memprofile.jupyter.display import WIDGET_MIME_TYPE

    monkeypatch.delenv("VSCODE_PID", raising=False)
    monkeypatch.setattr(modes, "_mode", "auto")
    ip.run_cell("%%memprofile -n plain\nq = 1")
    assert MIME_TYPE in displayed[-1] and WIDGET_MIME_TYPE not in displayed[-1]
    # VS Code renders widgets but not the extension: the widget comes along with the card
    monkeypatch.setenv("VSCODE_PID", "1234")
    ip.run_cell("%%memprofile -n vscode\nq = 1")
    assert {MIME_TYPE, WIDGET_MIME_TYPE, "text/html", "text/plain"} <= set(displayed[-1])
    ip.run_cell("%memprofile display card")
    ip.run_cell("%%memprofile -n card\nq = 1")
    assert WIDGET_MIME_TYPE not in displayed[-1]
    # widget mode: the widget instead of the card, so JupyterLab shows it too
    ip.run_cell("%memprofile display widget")
    ip.run_cell("%%memprofile -n widget\nq = 1")
    assert WIDGET_MIME_TYPE in displayed[-1] and MIME_TYPE not in displayed[-1] and "text/html" in displayed[-1]
    ip.run_cell("%memprofile display sideways")
    out = "".join(capsys.readouterr())
    assert "display mode widget (frontend seen as vscode)" in out and "must be one of auto, card, widget" in out


def test_compare_command_shows_both_profiles(ip, fresh_store, displayed):
    # (host memory only: other tests of this process may have left framework state behind)
    ip.run_cell("%%memprofile -q --no-torch --no-tf -n small\nimport numpy as np\na = np.ones(2**20)")
    ip.run_cell("%%memprofile -q --no-torch --no-tf -n large\nb = np.ones(2**24)")
    ip.run_cell("%memprofile compare small large")
    html = displayed[-1]["text/html"]
    assert "small → large" in html and "peak +" in html
    assert displayed[-1]["text/plain"].startswith("memprofile compare 'small' -> 'large'")


def test_detail_steps_takes_a_count_a_window_an_open_window_or_all():
    from memprofile.capture.base import DetailWindow
    from memprofile.jupyter.magic import parse_detail_steps

    assert parse_detail_steps("3") == DetailWindow(1, 3)
    assert parse_detail_steps(" 10-12 ") == DetailWindow(10, 12)
    assert parse_detail_steps("7-") == DetailWindow(7, None)
    assert parse_detail_steps("ALL") == DetailWindow(1, None)
    for bad in ("0", "12-10", "-3", "x", "1.5", "0-4", ""):
        with pytest.raises(ValueError, match="--detail-steps takes N"):
            parse_detail_steps(bad)
    w = DetailWindow(10, 12)
    assert [k for k in range(1, 15) if w.covers(k)] == [10, 11, 12] and w.text() == "10-12"
    assert DetailWindow.of(None).text() == "all" and DetailWindow.of(4).text() == "4"


def test_show_opens_a_saved_profile_and_merges_a_rank_folder(ip, fresh_store, displayed, tmp_path):
    import dataclasses

    from memprofile.model.profile import RankInfo
    from tests.builders import make_profile

    folder = tmp_path / "ranks"
    folder.mkdir()
    for rank in (0, 1):
        p = make_profile(name="step", id=f"{rank}" * 32)
        p.distributed = RankInfo(rank=rank, world_size=2, host="n0", started_unix_s=1e9 + rank)
        if rank == 1:
            p.devices = [dataclasses.replace(p.devices[0], peak_bytes=p.devices[0].peak_bytes * 2)]
        p.save(folder / f"step.rank{rank}.memprofile.json.gz")
    ip.run_line_magic("memprofile", f"show {folder}")
    merged = fresh_store.last()
    assert merged.merged.highest == 1 and merged.name == "step · 2 ranks"
    assert displayed[-1][MIME_TYPE]["id"] == merged.id
    # A saved file joins the store once, however often it is shown
    ip.run_line_magic("memprofile", f"show {folder / 'step.rank0.memprofile.json.gz'}")
    ip.run_line_magic("memprofile", f"show {folder / 'step.rank0.memprofile.json.gz'}")
    assert [p.id for p in fresh_store.all()] == [merged.id, "0" * 32]
    with pytest.raises(Exception, match="no profile"):
        ip.run_line_magic("memprofile", f"show {tmp_path / 'nothing-here'}")
