"""Long loops: what profiling costs end to end when the cell is hundreds of
training steps or millions of tiny ops, against the bare loop and the peers.

Interleaved rounds (bare, then each tool, in the same round), median of the
per-round ratios to that round's bare run: the machine is noisy and has 2
cores. End to end means until the tool's result exists: memprofile's Profile
(peak known), torch.profiler's events read back (its event tree walked), and
memray's Tracker stopped and its file's peak read (when memray is installed:
`pip install memray`). Prints markdown for docs/benchmarks.md.

    python benchmarks/long_loops.py [--rounds 5] [--small-only ROUNDS]

Workloads:
- "200 small Adam steps": a 64-wide MLP at batch 8 (~135,000 memory events
  when every step is recorded): what a GPU training loop looks like to the
  profiler.
- "transformer, 10 steps" and "100 steps": the 2-layer nn.TransformerEncoder
  of issue 13 (d_model 256, 4 heads, feed-forward 1024, batch 16 x 128
  tokens, Adam): ~0.75 s a step on this CPU.
- "2,000,000 tiny allocations": `a = torch.empty(64)` in a loop, no training
  step: the loop that passed 8 GiB before the profiler had a budget; run as a
  `%%memprofile` cell in a real IPython shell (the statement marks are what
  let the profiler end its detail at the budget). Also reported: the
  process's high-water mark over the start and its resident memory after.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from interleave import interleaved_ratios, with_memray
from memprofile.capture.host import RssReader, release_free_memory
from memprofile.profiler import Profiler
from memprofile.units import fmt_bytes


def small_steps(steps: int = 200):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(8, 64)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()

    run()
    return run, {"model": model, "opt": opt, "x": x}


def transformer_steps(steps: int = 10):
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True), 2)
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(16, 128, 256)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()

    for _ in range(2):  # warm: Adam's state exists, as in any later cell
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return run, {"model": model, "opt": opt, "x": x}


def memprofile_default(run, ns):
    with Profiler(name="b", store=False, namespace=ns) as p:
        run()
    assert p.peak_bytes


def memprofile_all(run, ns):
    with Profiler(name="b", store=False, namespace=ns, detail_steps=None) as p:
        run()
    assert p.peak_bytes


def torch_profiler_events(run, ns):
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True)
    with prof:
        run()
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        stack.extend(stack.pop().children)


def _tools():
    return with_memray(
        [
            ("memprofile (first 3 steps in detail)", memprofile_default),
            ("memprofile --detail-steps all", memprofile_all),
            ("torch.profiler (memory, events read)", torch_profiler_events),
        ]
    )


def ratios(workload, rounds: int, full: bool = True) -> tuple[float, dict[str, float]]:
    run, ns = workload()
    tools = [t for t in _tools() if full or "all" not in t[0]]
    return interleaved_ratios(run, ns, tools, rounds)


def tiny_allocations(n: int = 2_000_000, rounds: int = 3) -> dict[str, str]:
    """The loop as a %%memprofile cell in a real IPython shell."""
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    ip.run_cell("import torch\ntorch.set_num_threads(1)")
    cell = f"for i in range({n}):\n    a = torch.empty(64)\n"
    ip.run_cell("%%memprofile -q\n" + cell.replace(str(n), "1000"))  # torch's profiler starts once per process
    reader = RssReader()
    out = {}
    ratios_, hwm, after = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        ip.run_cell(cell)
        b = time.perf_counter() - t
        release_free_memory()
        start = reader.read()
        t = time.perf_counter()
        ip.run_cell("%%memprofile -q\n" + cell)
        ratios_.append((time.perf_counter() - t) / b)
        import memprofile

        p = memprofile.last()
        hwm.append(p.device("host").peak_bytes - start)
        after.append(reader.read() - start)
        out["why"] = p.capture.get("torch_detail_why", "-")
        out["budget"] = p.capture.get("budget", "?")
    reader.close()
    out["ratio"] = f"{statistics.median(ratios_):.2f}x"
    out["hwm"] = fmt_bytes(int(statistics.median(hwm)))
    out["after"] = fmt_bytes(int(statistics.median(after)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--small-only",
        type=int,
        metavar="ROUNDS",
        help="only the small-op loop, bare against memprofile's default, in ROUNDS rounds",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.small_only:
        run, ns = small_steps()
        _, per = interleaved_ratios(run, ns, [("memprofile", memprofile_default)], args.small_only)
        print(f"200 small Adam steps, {args.small_only} rounds: memprofile {per['memprofile']:.2f}x (median)")
        return
    tools = [name for name, _ in _tools()]
    print("| workload | bare | " + " | ".join(tools) + " |")
    print("|---|---|" + "---|" * len(tools))
    workloads = (
        ("200 small Adam steps", small_steps, args.rounds),
        ("transformer, 10 steps", transformer_steps, args.rounds),
        ("transformer, 100 steps", lambda: transformer_steps(100), max(1, args.rounds // 3)),
    )
    for label, workload, rounds in workloads:
        base, r = ratios(workload, rounds)
        print(f"| {label} | {base * 1000:.0f} ms | " + " | ".join(f"{r[t]:.2f}x" for t in tools) + " |", flush=True)
    tiny = tiny_allocations()
    print(
        f"\n2,000,000 tiny allocations as a %%memprofile cell (budget {tiny['budget']}): {tiny['ratio']} end to end; "
        f"detail ended by: {tiny['why']}; high-water mark over the start {tiny['hwm']}; resident memory after "
        f"the cell {tiny['after']} over the start"
    )


if __name__ == "__main__":
    main()
