"""A `@memprofile.profiled` training step called once per step in a notebook: what the what-if
engine adds. The engine measures the suggestions' estimates once per shape of the step's
arguments (whatif/estimate.py, the site's memo); later calls with the same shapes take those
outcomes. Interleaved rounds in a real IPython shell: the bare loop, the decorated loop with the
engine off (`whatif=False`), the decorated loop with it; the medians of the per-round ratios.

    python benchmarks/profiled_steps.py [--rounds 5] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.fixes

from tests.fixes import harness  # noqa: E402

SETUP = """
import torch, memprofile, time
from torch import nn
import torch.nn.functional as F
torch.set_num_threads(1)
net = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.Adam(net.parameters())
def step(xb, yb):
    opt.zero_grad()
    F.cross_entropy(net(xb), yb).backward()
    opt.step()
def loop(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn(torch.randn(64, 256), torch.randint(0, 10, (64,)))
    return time.perf_counter() - t
loop(step, 5)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    ip = harness.shell()
    harness.run(ip, SETUP)
    ratios: dict[str, list[float]] = {"engine off": [], "engine on": []}
    for r in range(args.rounds):
        # a new decoration each round: its first call runs the engine, as a notebook's would
        harness.run(
            ip,
            "off = memprofile.profiled(name='off', store=False, whatif=False)(step)\n"
            "on = memprofile.profiled(name='on', store=False)(step)\n"
            f"times = (loop(step, {args.steps}), loop(off, {args.steps}), loop(on, {args.steps}))",
        )
        bare, off, on = ip.user_ns["times"]
        ratios["engine off"].append(off / bare)
        ratios["engine on"].append(on / bare)
        methods = {s.estimate_method for s in ip.user_ns["on"].profile.suggestions}
        print(f"round {r + 1}: bare {bare:.3f} s, off {off / bare:.2f}x, on {on / bare:.2f}x ({methods})", flush=True)
    off, on = (statistics.median(v) for v in ratios.values())
    print(f"median over {args.rounds} rounds of {args.steps} steps: engine off {off:.2f}x, on {on:.2f}x bare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
