"""The cost of recording a cell's lines on plain Python at the top of a cell
(issue 27, row 12): a `%%memprofile` cell against the same cell run bare, in
one IPython shell, interleaved round by round (the machine is noisy and has 2
cores), median of the per-round ratios, end to end (until the Profile exists).

Cells: a 3,000,000-iteration `for` of one statement, the same with three
statements and a `continue`, a `while` loop, and a generator's loop. Each
runs twice: with torch imported, where torch's detail records and the marks
are on until a loop is found quiet, and in a process without any framework
(no marks recorded at all), each in a fresh process. Then the first loop at
the top of a script, `memprofile run script.py` against `python script.py`
(the script times its own loop: the processes' start is not the loop's).

    python benchmarks/python_loop.py [--rounds 7] [--n 3000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time

CELLS = {
    "for, 1 statement": "total = 0\nfor i in range({n}):\n    total += i * i\n",
    "for, 3 statements + continue": (
        "total = 0\nodd = 0\nfor i in range({n}):\n    if i % 2:\n        odd += 1\n        continue\n"
        "    total += i\n    total -= 1\n"
    ),
    "while": "i = 0\nwhile i < {n}:\n    i += 1\n",
    "generator": "def g(n):\n    yield from range(n)\ntotal = 0\nfor i in g({n}):\n    total += i\n",
}

CHILD = textwrap.dedent("""
    import json, statistics, sys, time
    from IPython.testing.globalipapp import start_ipython
    import memprofile
    framework, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cells = json.loads(sys.argv[4])
    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    if framework == "torch":
        ip.run_cell("import torch")
    out = {}
    for name, cell in cells.items():
        cell = cell.format(n=n)
        ip.run_cell("%%memprofile -q\\n" + cell)  # warm: the first profile's imports
        bare, ratios = [], []
        for _ in range(rounds):
            t = time.perf_counter(); ip.run_cell(cell); b = time.perf_counter() - t
            t = time.perf_counter(); ip.run_cell("%%memprofile -q\\n" + cell); p = time.perf_counter() - t
            bare.append(b)
            ratios.append(p / b)
        out[name] = (statistics.median(bare), statistics.median(ratios))
    print(json.dumps(out))
""")


#: A script that times its own top-level loop (the process's start is not the loop's cost).
SCRIPT = """
import time
{imports}
t = time.perf_counter()
total = 0
for i in range({n}):
    total += i * i
print(time.perf_counter() - t)
"""


def script_ratios(n: int, rounds: int, imports: str) -> tuple[float, float]:
    """The loop's median time bare (`python script.py`) and its median ratio under `memprofile run`."""
    import statistics
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "loop.py"
        script.write_text(SCRIPT.format(n=n, imports=imports))
        bare, ratios = [], []
        for _ in range(rounds):
            times = []
            for cmd in (
                [sys.executable, str(script)],
                [sys.executable, "-m", "memprofile", "run", "-o", str(Path(d) / "p.json"), str(script)],
            ):
                done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=d)
                times.append(float(done.stdout.strip().splitlines()[-1]))
            bare.append(times[0])
            ratios.append(times[1] / times[0])
        return statistics.median(bare), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=3_000_000)
    args = parser.parse_args()
    print(f"| cell (top level, {args.n} iterations) | kernel | bare median | profiled / bare (median) |")
    print("|---|---|---|---|")
    for framework in ("none", "torch"):
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, framework, str(args.n), str(args.rounds), json.dumps(CELLS)],
            capture_output=True,
            text=True,
            check=True,
        )
        results = json.loads(done.stdout.strip().splitlines()[-1])
        for name, (bare, ratio) in results.items():
            kernel = "torch imported" if framework == "torch" else "no framework"
            print(f"| {name} | {kernel} | {bare * 1e3:.0f} ms | {ratio:.3f} |")
        print(f"<!-- {framework}: {time.perf_counter() - t:.0f} s -->", file=sys.stderr)
    for imports, kernel in (("", "no framework"), ("import torch", "torch imported")):
        bare, ratio = script_ratios(args.n, args.rounds, imports)
        print(f"| for, 1 statement, `memprofile run script.py` | {kernel} | {bare * 1e3:.0f} ms | {ratio:.3f} |")


if __name__ == "__main__":
    main()
