"""%%memprofile and %memprofile in a real IPython InteractiveShell."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

from memprofile.render.bundle import MIME_TYPE


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython()
    shell.run_line_magic("load_ext", "memprofile")
    yield shell


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
    assert "must be a positive number" in "".join(capsys.readouterr())


def test_quiet_stores_without_display(ip, fresh_store, displayed):
    ip.run_cell("%%memprofile -q\ny = 2")
    assert len(fresh_store) == 1 and not [d for d in displayed if MIME_TYPE in d]


def test_line_commands(ip, fresh_store, displayed, tmp_path, capsys):
    ip.run_cell("%%memprofile -q -n first\na = 1")
    ip.run_cell("%%memprofile -q -n second\nb = 1")
    ip.run_line_magic("memprofile", "list")
    out = capsys.readouterr().out
    assert "first" in out and "second" in out
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
    [("", "needs a command"), ("frobnicate", "unknown or malformed"), ("export x.txt", "cannot tell the format"),
     ("show nope", "no profile")],
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
