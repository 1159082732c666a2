"""What profiling a PyTorch cell costs, against the bare cell and torch.profiler.

Interleaved rounds (bare, memprofile, torch.profiler variants, ...), median of
per-round ratios to the bare run of the same round, because this machine is
noisy and has 2 cores. Prints markdown for docs/benchmarks.md.

    python benchmarks/torch_overhead.py [--rounds 9]

Workloads:
- "transformer step": one training step (forward, backward, Adam) of a
  2-layer nn.TransformerEncoder, d_model 256, 4 heads, batch 16 x 128 tokens.
- "200 small Adam steps": a 64-wide MLP at batch 8, 200 steps: many tiny ops,
  where per-event work dominates.

Columns: bare wall time; memprofile's end-to-end ratio (start + cell + stop,
i.e. until the Profile exists); the part of that spent turning the capture into
a Profile (stop), as a share of the bare time; torch.profiler alone with
profile_memory (and record_shapes, and with_stack), end to end including
building its event list (key_averages), which is what a user of it waits for;
and the floor: torch.profiler with memory and shapes started and stopped, its
events never read (what stopping costs torch itself).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from memprofile.profiler import Profiler


def transformer_workload():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2)
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(16, 128, 256)

    def step():
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()

    return step, {"model": model, "opt": opt, "x": x}


def small_steps_workload():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(8, 64), torch.randn(8, 1)

    def loop():
        for _ in range(200):
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    return loop, {"model": model, "opt": opt, "x": x, "y": y}


def run_bare(fn, ns):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, 0.0


def run_memprofile(fn, ns, **options):
    t0 = time.perf_counter()
    p = Profiler(name="bench", store=False, namespace=ns, **options)
    p.start()
    fn()
    t1 = time.perf_counter()
    p.stop()
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def run_torch_profiler(fn, ns, event_list=True, **options):
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, **options) as prof:
        fn()
    if event_list:
        prof.key_averages()
    return time.perf_counter() - t0, 0.0


VARIANTS = {
    "bare": run_bare,
    "memprofile": run_memprofile,
    # The floor for any tool built on torch.profiler with these options: start,
    # run and stop it, read nothing.
    "torch.profiler memory+shapes, stop only": lambda fn, ns: run_torch_profiler(
        fn, ns, event_list=False, record_shapes=True
    ),
    "torch.profiler memory": lambda fn, ns: run_torch_profiler(fn, ns),
    "torch.profiler memory+shapes": lambda fn, ns: run_torch_profiler(fn, ns, record_shapes=True),
    "torch.profiler memory+shapes+stack": lambda fn, ns: run_torch_profiler(
        fn, ns, record_shapes=True, with_stack=True
    ),
    "memprofile --stack": lambda fn, ns: run_memprofile(fn, ns, with_stack=True),
}


def measure(name, make, rounds, variants):
    fn, ns = make()
    for variant in variants.values():  # warm-up: imports, allocator caches, first-call costs
        variant(fn, ns)
    times = {k: [] for k in variants}
    stops = []
    for _ in range(rounds):
        for key, variant in variants.items():
            wall, stop = variant(fn, ns)
            times[key].append(wall)
            if key == "memprofile":
                stops.append(stop)
    bare = times["bare"]
    ratio = {k: statistics.median(t / b for t, b in zip(v, bare)) for k, v in times.items()}
    stop_share = statistics.median(s / b for s, b in zip(stops, bare))
    return statistics.median(bare), ratio, stop_share


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--quick", action="store_true", help="only bare, memprofile and the floor, on the transformer step"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    quick = ("bare", "memprofile", "torch.profiler memory+shapes, stop only")
    variants = {k: VARIANTS[k] for k in quick} if args.quick else VARIANTS
    workloads = (("transformer step", transformer_workload), ("200 small Adam steps", small_steps_workload))
    if args.quick:
        workloads = workloads[:1]
    cols = [k for k in variants if k != "bare"]
    print(f"torch {torch.__version__}, {args.rounds} interleaved rounds, median ratios to bare\n")
    print("| workload | bare | " + " | ".join(cols) + " | memprofile stop / bare |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for name, make in workloads:
        bare, ratio, stop_share = measure(name, make, args.rounds, variants)
        print(
            f"| {name} | {bare * 1e3:.0f} ms | "
            + " | ".join(f"{ratio[k]:.2f}x" for k in cols)
            + f" | {stop_share * 100:.0f} % |"
        )


if __name__ == "__main__":
    main()
