"""Issue 27, rows 1 and 17 (and the cost of row 12, which is measured in
benchmarks/python_loop.py): recording the cell's lines observes statements,
it never changes what they do.

Row 1: after three optimizer steps (the torch detail has ended, the marks'
fast mode), a `for` over a generator or an open file that ends in `break`,
`return` or an exception left the generator closed (the marks' `yield from`
closed the iterator with the wrapper). Row 17: `%reset -f` inside a profiled
cell removed the marks' names from the namespace: NameError. Each cell runs
bare and profiled, and the two must agree; the same scripts run under
`memprofile run` and bare `python`."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

TRAIN = """
import torch
torch.manual_seed(0)
net = torch.nn.Linear(8, 2)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for _ in range(4):
    opt.zero_grad()
    net(torch.ones(4, 8)).sum().backward()
    opt.step()
"""

#: After the steps: loops that leave their iterator early, in every way.
LEAVES_EARLY = """
def numbers():
    yield from range(10)

g = numbers()
for x in g:
    if x == 2:
        break
after_break = next(g)

h = numbers()
try:
    for x in h:
        if x == 1:
            raise KeyError(x)
except KeyError:
    pass
after_raise = next(h)

def first(it):
    for x in it:
        return x

k = numbers()
first_in_function = first(k), next(k)

f = open(__file__ if "__file__" in globals() else PATH)
for line in f:
    break
second_line_read = f.readline() != ""
f.close()

z = numbers()
while True:
    for x in z:
        if x == 5:
            break
    break
after_nested = next(z)

result = (after_break, after_raise, first_in_function, second_line_read, after_nested)
"""


def _cell_result(ip, cell: str, profiled: bool):
    ip.user_ns.pop("result", None)
    out = ip.run_cell(("%%memprofile -q\n" if profiled else "") + cell)
    return out.error_in_exec, ip.user_ns.get("result")


def test_a_loop_that_leaves_early_leaves_its_iterator_open_as_bare(ip, fresh_store, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\nthree\n")
    ip.user_ns["PATH"] = str(path)
    ip.run_cell(TRAIN)  # the model exists bare; the profiled cell trains it again (the detail ends)
    bare = _cell_result(ip, TRAIN + LEAVES_EARLY, profiled=False)
    profiled = _cell_result(ip, TRAIN + LEAVES_EARLY, profiled=True)
    assert bare == (None, (3, 2, (0, 1), True, 6))
    assert profiled == bare


def test_a_reset_inside_a_profiled_cell_runs_as_bare(ip, fresh_store):
    cell = "a = 1\n%reset -f\nb = 2\nfor i in range(3):\n    b += i\n"
    cell = ip.transform_cell(cell)  # the %reset line as IPython runs it
    for profiled in (False, True):
        out = ip.run_cell(("%%memprofile -q\n" if profiled else "") + cell)
        assert out.error_in_exec is None, out.error_in_exec
        assert ip.user_ns["b"] == 5 and "a" not in ip.user_ns


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_a_script_whose_loops_leave_early_exits_as_bare_under_run(tmp_path):
    script = tmp_path / "leaves.py"
    script.write_text(TRAIN + textwrap.dedent(LEAVES_EARLY) + "print(result)\n")
    bare = _run([str(script)], tmp_path)
    profiled = _run(["-m", "memprofile", "run", "-o", str(tmp_path / "p.json"), str(script)], tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert (profiled.returncode, profiled.stdout) == (0, bare.stdout), profiled.stderr[-2000:]


def test_an_errors_line_is_its_statement_also_in_a_loop_that_ran_unmarked(ip, fresh_store):
    ip.run_cell("import torch\ndef fails():\n    raise ValueError('in a function')\n")
    ip.run_cell(
        "%%memprofile -q\nt = 0\nfor i in range(300000):\n    t += i\n    if i == 250000:\n        raise KeyError(i)\n"
    )
    assert ip.user_ns["t"] == sum(range(250001))
    assert memprofile_last().error.line == 5  # (the loop had gone quiet: no marks recorded)
    ip.run_cell("%%memprofile -q\nx = 1\nfails()\n")
    assert memprofile_last().error.line == 2  # the cell's line that called the function


def test_a_loop_that_starts_allocating_late_gets_its_lines_back(ip, fresh_store, monkeypatch):
    # 200,000 iterations of plain Python (the loop goes unmarked), then a tensor every 100th:
    # the marks are re-armed and the tensors are placed on their line. Re-armed every 5 ms here
    # (by default the wait doubles to 40 ms while the loop stays quiet: the tensors of that wait
    # count for the `for` line, and how many there are depends on the machine's load).
    from memprofile.capture import lines

    monkeypatch.setattr(lines, "MAX_REARM_S", lines.REARM_S)
    ip.run_cell("import torch")
    ip.run_cell(
        "%%memprofile -q --budget 4G\nxs = []\nt = 0\nfor i in range(2200000):\n    t += i * 2\n"
        "    if i >= 200000 and i % 100 == 0:\n        xs.append(torch.ones(256))\n"
    )
    by_line = {s.line: s.allocated_bytes for s in memprofile_last().lines}
    assert len(ip.user_ns["xs"]) == 20000
    # (a budget the tensors cannot reach: the detail records the whole loop)
    assert by_line.get(6, 0) >= 0.75 * sum(by_line.values()), by_line


def memprofile_last():
    import memprofile

    return memprofile.last()


@pytest.mark.parametrize("kernel", ["no framework", "torch imported"])
def test_a_plain_python_loop_runs_unmarked(ip, fresh_store, monkeypatch, kernel):
    """Row 12 (its cost is measured in benchmarks/python_loop.py, not here): a loop of plain
    Python at the top of a cell runs its body as written, not one Python call per statement.
    With no framework recording, no mark runs at all; with torch's detail recording, the loop
    is found quiet and runs marked only for the windows it is re-armed for."""
    from memprofile.capture import lines

    calls = {"loop": 0, "mark": 0}
    loop_mark, mark = lines.loop_mark, lines.mark

    def counted_loop_mark(flag):
        calls["loop"] += 1
        loop_mark(flag)

    def counted_mark(line):
        calls["mark"] += 1
        mark(line)

    monkeypatch.setattr(lines, "loop_mark", counted_loop_mark)
    monkeypatch.setattr(lines, "mark", counted_mark)
    cell = "total = 0\nfor i in range(300000):\n    total += i * i\n"
    if kernel == "torch imported":
        ip.run_cell("import torch")
        ip.run_cell("%%memprofile -q --no-tf\n" + cell)
        assert calls["loop"] < 30000, calls  # < 10 % of the iterations marked
    else:
        ip.run_cell("%%memprofile -q --no-torch --no-tf\n" + cell)
        assert calls["loop"] == 0, calls
    assert ip.user_ns["total"] == sum(i * i for i in range(300000))
