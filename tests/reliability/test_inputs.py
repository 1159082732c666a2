"""Issue 14: paths, files, names and await.

Each test is a row of issue 14's table that failed before: export to a folder
that cannot take the file, deeply nested and inflating files, a quoted
--name, the default name's number, a cell with top-level await.

"No write permission" runs as root here, where chmod stops nothing: it is a
path under /sys (EACCES) and under /proc (no new files); a path under a file
is ENOTDIR."""

from __future__ import annotations

import errno
import json
import re
import tracemalloc
import zlib
from pathlib import Path

import nbformat
import pytest
from IPython.core.error import UsageError
from nbclient import NotebookClient

from memprofile import cli
from memprofile.errors import MAX_MESSAGE_CHARS, OutputPathError, ProfileFormatError, why_unwritable
from memprofile.model import codec
from memprofile.render.bundle import MIME_TYPE
from tests.builders import make_profile
from tests.kernels import kernel_env

UNWRITABLE = {
    "missing folder": ("/no/such/folder/report.html", "does not exist"),
    "under a file": ("/etc/hostname/report.json", "is a file, not a folder"),
    "no permission (/sys)": ("/sys/report.html", "no permission"),
    "no new files (/proc)": ("/proc/report.json.gz", "cannot be created"),
}


def _one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and message.startswith("cannot write")


# -- export to a path that cannot take the file ------------------------------


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_magic_export_to_unwritable_path_is_one_line(ip, fresh_store, case):
    path, says = UNWRITABLE[case]
    fresh_store.add(make_profile(name="p"))
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("memprofile", f"export {path}")
    _one_line(str(info.value))
    assert says in str(info.value) and path in str(info.value)


@pytest.mark.parametrize("case", [c for c in UNWRITABLE if not UNWRITABLE[c][0].endswith(".html")])
def test_profile_save_to_unwritable_path_raises_the_projects_error(case):
    path, says = UNWRITABLE[case]
    with pytest.raises(OutputPathError, match=says) as info:
        make_profile().save(path)
    _one_line(str(info.value))


def test_read_only_filesystem_message():
    # No read-only mount can be made in the test; the message is built from the errno alone.
    message = why_unwritable(Path("/mnt/ro/x.html"), OSError(errno.EROFS, "Read-only file system"))
    assert message == "cannot write /mnt/ro/x.html: /mnt/ro is on a read-only filesystem; choose another folder"


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_cli_export_to_unwritable_path_is_one_line(tmp_path, capsys, case):
    path, says = UNWRITABLE[case]
    saved = make_profile().save(tmp_path / "p.json")
    assert cli.main(["export", str(saved), "-o", path]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("memprofile: cannot write") and "\n" not in err and says in err


def test_cli_run_to_missing_folder_says_so_before_running(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("open('ran', 'w').close()\n")
    assert cli.main(["run", "-o", "/no/such/folder/p.json", str(script)]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "ran").exists()


# -- files that are not profiles ----------------------------------------------


def test_deeply_nested_json_is_a_format_error(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000)
    with pytest.raises(ProfileFormatError, match="nested too deeply"):
        codec.load(path)
    assert cli.main(["show", str(path)]) == 1
    assert "nested too deeply" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory) -> Path:
    """About 1 MB of gzip that inflates to 1 GiB of zeros."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.json.gz"
    packer, zeros = zlib.compressobj(9, wbits=31), bytes(16 << 20)
    with path.open("wb") as f:
        for _ in range(64):
            f.write(packer.compress(zeros))
        f.write(packer.flush())
    return path


def test_gzip_bomb_is_refused_within_the_inflate_bound(gzip_bomb):
    size = gzip_bomb.stat().st_size
    assert size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ProfileFormatError, match="inflates to more than"):
            codec.load(gzip_bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # It stops at the bound (200 x the file), never at the 1 GiB the file would become.
    assert codec.inflate_limit(size) == 200 * size
    assert peak < codec.inflate_limit(size) + (32 << 20)


def test_valid_gzip_profile_still_loads(tmp_path):
    profile = make_profile(name="gz")
    assert codec.load(profile.save(tmp_path / "p.json.gz")).name == "gz"


def test_one_huge_wrong_field_gives_a_short_message_that_says_where(tmp_path):
    data = json.loads(make_profile().to_json())
    data["name"] = ["x" * (26 << 20)]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileFormatError) as info:
        codec.load(path)
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS and "profile.name" in str(info.value)
    data["name"] = 7
    data["devices"] = {"k" * (1 << 20): 1}
    with pytest.raises(ProfileFormatError) as info:
        codec.profile_from_dict(data)
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS


# -- names --------------------------------------------------------------------


def test_quoted_name_is_stored_without_quotes_and_found_by_show(ip, fresh_store, capsys):
    ip.run_cell('%%memprofile --name "two words" --quiet\nx = 1\n')
    assert [p.name for p in fresh_store.all()] == ["two words"]
    ip.run_line_magic("memprofile", 'show "two words"')
    ip.run_cell("%%memprofile -q -n 'it''s'\nx = 2\n")
    assert fresh_store.all()[-1].name == "its"


def test_unclosed_quote_is_a_usage_message(ip):
    with pytest.raises(UsageError, match="No closing quotation"):
        ip.run_cell_magic("memprofile", '--name "two', "x = 1\n")


# -- in a real kernel: the cell's number and top-level await ----------------


def _run_in_kernel(cells: list[str], tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(
        nb, timeout=300, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=kernel_env())
    return nb


def _summary(cell) -> dict:
    return next(o["data"][MIME_TYPE] for o in cell.outputs if MIME_TYPE in o.get("data", {}))


@pytest.mark.kernel
def test_kernel_default_name_and_traceback_number_and_await(tmp_path):
    nb = _run_in_kernel(
        [
            "%load_ext memprofile",
            "%%memprofile\nx = 1\n1 / 0",
            "%%memprofile\nimport asyncio\nawait asyncio.sleep(0.01)\nvalue = await asyncio.sleep(0, result=41)\n"
            "value + 1",
            "import memprofile\n[p.name for p in memprofile.profiles()], value",
        ],
        tmp_path,
    )
    failed, awaited = nb.cells[1], nb.cells[2]
    assert failed.execution_count == 2 and _summary(failed)["name"] == "In [2]"
    error = next(o for o in failed.outputs if o["output_type"] == "error")
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))  # no colours
    assert "Cell In[2], line 2" in traceback and "Cell In[3]" not in traceback
    assert not any(o["output_type"] == "error" for o in awaited.outputs), awaited.outputs
    assert _summary(awaited)["name"] == "In [3]"
    assert awaited.outputs[-1]["data"]["text/plain"] == "42"
    assert nb.cells[3].outputs[-1]["data"]["text/plain"] == "(['In [2]', 'In [3]'], 41)"


def test_save_html_to_a_missing_folder_is_one_line(tmp_path):
    from memprofile.errors import OutputPathError
    from memprofile.model.profile import Profile

    p = Profile(id="x", name="x", started_at="2026-12-01T00:00:00+00:00", duration_s=0.0)
    with pytest.raises(OutputPathError) as err:
        p.save_html(tmp_path / "no" / "such" / "r.html")
    assert "\n" not in str(err.value) and "does not exist" in str(err.value)
