"""The memory budget in every shape of code: 2,000,000 small allocations
(`a = torch.empty(64)` in a loop, no model, no training step) run by each
shape a user writes, bare and profiled, interleaved round by round (the
machine is noisy and has 2 cores), median ratios end to end (until the
Profile exists). Also the process's high-water mark over the start and its
resident memory after, over the start. Prints markdown for docs/benchmarks.md.

    python benchmarks/budget_shapes.py [--rounds 3] [--n 2000000]

Shapes: a `%%memprofile` cell with the loop inline; a cell calling a function
defined in an earlier cell; a method of a class in an imported module under
`with memprofile.profile()`; the same function under `@memprofile.profiled`;
`with memprofile.profile()` in a worker thread; `memprofile run -m module`
against `python -m module` (a process each). In the same rounds, on the
function: memray's Tracker (peak read) and torch.profiler (memory, its event
tree walked) on --torch-profiler-n allocations (recording 2,000,000 takes
more memory than this machine has). The high-water mark is the process's
(VmHWM, reset before each run through /proc/self/clear_refs) over the
resident memory at the start. Then TensorFlow: an eager loop of tiny ops
(`tf.ones((4,)) + 1`, --tf-n of them) under `with memprofile.profile()`
against TF's own profiler (trace written).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

import memprofile
from memprofile.capture.host import RssReader, release_free_memory
from memprofile.units import fmt_bytes

MODULE = """
import torch


def many(n):
    for _ in range(n):
        a = torch.empty(64)


class Loop:
    def run(self, n):
        many(n)


if __name__ == "__main__":
    import sys
    torch.set_num_threads(1)
    many(int(sys.argv[1]))
"""


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) * 1024


def _in_process(rounds: int, bare, profiled, why_key: str = "torch_detail_why") -> dict[str, str]:
    reader = RssReader()
    ratios, hwm, after, why = [], [], [], "-"
    for _ in range(rounds):
        release_free_memory()
        t = time.perf_counter()
        bare()
        b = time.perf_counter() - t
        release_free_memory()
        start = reader.read()
        _reset_hwm()
        t = time.perf_counter()
        p = profiled()
        ratios.append((time.perf_counter() - t) / b)
        hwm.append(_hwm() - start)
        if p is not None:
            release_free_memory()
            after.append(reader.read() - start)
            why = p.capture.get(why_key, "-")
    reader.close()
    return {
        "ratio": f"{statistics.median(ratios):.2f}x",
        "hwm": fmt_bytes(int(statistics.median(hwm))),
        "after": fmt_bytes(int(statistics.median(after))) if after else "-",
        "why": why,
    }


def _memray(run) -> None:
    import memray

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.bin")
        with memray.Tracker(path):
            run()
        assert memray.FileReader(path).metadata.peak_memory  # until the peak is known


def _torch_profiler(run) -> None:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with prof:
        run()
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        stack.extend(stack.pop().children)
    del prof, stack
    import gc

    gc.collect()


def _in_thread(work):
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(work()))
    t.start()
    t.join()
    return out[0]


def _script(rounds: int, n: int, folder: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{folder}:{os.environ.get('PYTHONPATH', '')}"}
    probe = textwrap.dedent("""
        import sys, time
        t = time.perf_counter()
        if sys.argv[1] == "bare":
            import runpy
            sys.argv = ["tinyloops", sys.argv[2]]
            runpy.run_module("tinyloops", run_name="__main__")
            code = 0
        else:
            from memprofile.cli import main
            code = main(["run", "--out", sys.argv[3], "-n", "mod", "-m", "tinyloops", sys.argv[2]])
        hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
        print("RESULT", time.perf_counter() - t, hwm)
        raise SystemExit(code)
    """)
    ratios, extra = [], []
    for _ in range(rounds):
        got = {}
        for kind in ("bare", "profiled"):
            out = subprocess.run(
                [sys.executable, "-c", probe, kind, str(n), str(folder / "out")],
                env=env,
                capture_output=True,
                text=True,
                cwd=folder,
            )
            line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
            got[kind] = [float(v) for v in line.split()[1:]]
        ratios.append(got["profiled"][0] / got["bare"][0])
        extra.append(got["profiled"][1] - got["bare"][1])
    p = memprofile.load(next((folder / "out").glob("mod*.memprofile.json.gz")))
    return {
        "ratio": f"{statistics.median(ratios):.2f}x (in the script)",
        "hwm": fmt_bytes(int(statistics.median(extra))) + " (VmHWM over the bare run's)",
        "after": "-",
        "why": p.capture.get("torch_detail_why", "-"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--torch-profiler-n", type=int, default=200_000)
    parser.add_argument("--tf-n", type=int, default=150_000, help="TF eager ops (0: no TF section)")
    args = parser.parse_args()
    n = args.n
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="budget-shapes-"))
    (folder / "tinyloops.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    import tinyloops  # type: ignore[import-not-found]
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    ip.run_cell(f"import torch\ndef many():\n    for _ in range({n}):\n        a = torch.empty(64)\n")
    ip.run_cell("%%memprofile -q\nfor i in range(1000):\n    a = torch.empty(64)\n")  # torch's profiler starts once
    inline = f"for i in range({n}):\n    a = torch.empty(64)\n"

    def profile_block():
        with memprofile.profile(name="block"):
            tinyloops.Loop().run(n)
        return memprofile.last()

    decorated = memprofile.profiled(name="decorated")(tinyloops.many)

    def profile_decorated():
        decorated(n)
        return decorated.profile

    rows = [
        (
            "%%memprofile cell, the loop inline",
            _in_process(
                args.rounds,
                lambda: ip.run_cell(inline),
                lambda: (ip.run_cell("%%memprofile -q\n" + inline), memprofile.last())[1],
            ),
        ),
        (
            "%%memprofile cell calling a function from an earlier cell",
            _in_process(
                args.rounds,
                lambda: ip.run_cell("many()"),
                lambda: (ip.run_cell("%%memprofile -q\nmany()"), memprofile.last())[1],
            ),
        ),
        (
            "with memprofile.profile(): a method of an imported class",
            _in_process(args.rounds, lambda: tinyloops.Loop().run(n), profile_block),
        ),
        (
            "@memprofile.profiled function from an imported module",
            _in_process(args.rounds, lambda: tinyloops.many(n), profile_decorated),
        ),
        (
            "with memprofile.profile() in a worker thread",
            _in_process(args.rounds, lambda: tinyloops.many(n), lambda: _in_thread(profile_block)),
        ),
        ("memprofile run -m module", _script(args.rounds, n, folder)),
        (
            "memray Tracker (the function; peak read)",
            _in_process(args.rounds, lambda: tinyloops.many(n), lambda: _memray(lambda: tinyloops.many(n))),
        ),
        (
            f"torch.profiler (memory, events read), {args.torch_profiler_n:,} allocations",
            _in_process(
                args.rounds,
                lambda: tinyloops.many(args.torch_profiler_n),
                lambda: _torch_profiler(lambda: tinyloops.many(args.torch_profiler_n)),
            ),
        ),
    ]
    print(
        f"{n:,} allocations (`a = torch.empty(64)`), {args.rounds} interleaved rounds, torch "
        f"{torch.__version__}, budget: the default\n"
    )
    _print_table(rows)
    if args.tf_n:
        _tensorflow(args.rounds, args.tf_n)


def _print_table(rows: list[tuple[str, dict[str, str]]]) -> None:
    print(
        "| shape | profiled / bare (end to end) | high-water mark over the start | resident after, over the start "
        "| detail ended by |"
    )
    print("|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['ratio']} | {r['hwm']} | {r['after']} | {r['why']} |", flush=True)


def _tensorflow(rounds: int, n: int) -> None:
    import tensorflow as tf

    def many():
        for _ in range(n):
            a = tf.ones((4,)) + 1  # noqa: F841

    def profiled():
        with memprofile.profile(name="tf"):
            many()
        return memprofile.last()

    def tf_profiler():
        with tempfile.TemporaryDirectory() as d:
            tf.profiler.experimental.start(d)
            many()
            tf.profiler.experimental.stop()

    for _ in range(100):
        a = tf.ones((4,)) + 1  # noqa: F841  TF's first ops
    rows = [
        ("eager loop under with memprofile.profile()", _in_process(rounds, many, profiled, "tf_detail_why")),
        ("TF's profiler (trace written)", _in_process(rounds, many, lambda: (tf_profiler(), None)[1])),
    ]
    print(
        f"\nTensorFlow {tf.__version__}: {n:,} eager ops (`tf.ones((4,)) + 1`), no training step, {rounds} "
        f"interleaved rounds, budget: the default\n"
    )
    _print_table(rows)


if __name__ == "__main__":
    main()
