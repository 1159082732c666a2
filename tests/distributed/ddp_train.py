"""A small DDP training job (gloo, CPU) that writes down what each rank holds.

Run by tests/distributed/test_torchrun.py under
`torchrun --nproc_per_node 2 --no-python memprofile run --out DIR ddp_train.py --truth DIR2`,
and runnable alone (`python ddp_train.py` with RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set). Each rank writes `truth.rank{R}.json`: its parameter, gradient,
DDP bucket and optimizer-state bytes from torch's own objects, which the test
compares with the rank's profile. Rank 1 keeps an extra buffer (--extra-mib) alive
to the end: the merge must name rank 1 as the highest and find the buffer there.

The truth about the buckets: DDP's reducer copies the gradients into flat buckets
(or, with gradient_as_bucket_view, makes the gradients views of them). Python cannot
reach the buckets themselves; the reducer reports their sizes in bytes in its
logging data (`rebuilt_bucket_sizes` after the first step rebuilds them in the order
the gradients became ready), and with bucket views the distinct storages of the
gradients are the buckets. The truth is read without allocating, so that it does
not change what it measures; only a run with --api, its profile ended, also asks the
reducer for zeroed copies of its buckets (a second account of their sizes).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

MiB = 1 << 20


class SmallConvNet(nn.Module):
    """Two conv blocks and a wide head: ~8.5 MiB of parameters, most in one layer
    (larger than the 1 MiB bucket cap used here, so DDP makes several buckets)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, 1024)
        self.classifier = nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.head(self.features(x).flatten(1))))


def _bytes(t: torch.Tensor) -> int:
    return t.nelement() * t.element_size()


def truth(
    rank: int,
    model: nn.Module,
    ddp: DistributedDataParallel,
    opt: torch.optim.Optimizer,
    extra: torch.Tensor | None,
    extra_line: int,
    batch: tuple[torch.Tensor, ...],
) -> dict:
    """What this rank holds at the end, from torch's objects (nothing allocated)."""
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    storages = {g.untyped_storage().data_ptr(): g.untyped_storage().nbytes() for g in grads}
    logging = ddp._get_ddp_logging_data()  # the reducer's own figures (DDPLoggingData)
    buckets = [int(s) for s in str(logging.get("rebuilt_bucket_sizes") or logging["bucket_sizes"]).split(",")]
    view = bool(logging["gradient_as_bucket_view"])
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    layers = {}
    for name, module in ddp.named_modules():  # the names the profile gives them ("module.head")
        own = list(module.parameters(recurse=False))
        if own:
            layers[name] = {
                "parameter": sum(_bytes(p) for p in own),
                "gradient": sum(_bytes(p.grad) for p in own if p.grad is not None),
                "optimizer_state": sum(
                    v.untyped_storage().nbytes()
                    for p in own
                    for v in opt.state[p].values()
                    if isinstance(v, torch.Tensor)
                ),
            }
    return {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "local_rank": int(os.environ.get("LOCAL_RANK", rank)),
        "host": socket.gethostname(),
        "backend": str(dist.get_backend()),
        "gradient_as_bucket_view": view,
        "parameter_bytes": sum(_bytes(p) for p in params),
        "layers": layers,
        # each parameter's own gradient (with bucket views: its slice of a bucket)
        "gradient_bytes": sum(_bytes(g) for g in grads),
        "gradient_storage_bytes": sum(storages.values()),
        "bucket_bytes": buckets,
        "bucket_cap_bytes": int(logging["bucket_cap_bytes"]),
        # what the allocator holds for gradients: the buckets, and the gradients apart from them unless views
        "gradient_held_bytes": sum(buckets) + (0 if view else sum(storages.values())),
        "optimizer_state_bytes": sum(t.untyped_storage().nbytes() for t in state),
        "input_bytes": sum(_bytes(t) for t in batch),
        "extra_bytes": _bytes(extra) if extra is not None else 0,
        "extra_line": extra_line,
        "steps": 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--bucket-view", action="store_true", help="DDP's gradient_as_bucket_view")
    parser.add_argument("--extra-mib", type=int, default=0, help="rank 1 keeps a buffer of this size alive")
    parser.add_argument("--truth", type=Path, help="folder for truth.rank{R}.json")
    parser.add_argument(
        "--api",
        type=Path,
        metavar="DIR",
        help="profile the training with memprofile.profile(out=DIR) (the model still alive when it "
        "ends) instead of being run by `memprofile run`",
    )
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # DDP broadcasts rank 0's parameters anyway; the batches differ by rank
    if args.api is not None:
        import memprofile

        block: contextlib.AbstractContextManager = memprofile.profile(name="ddp_train", out=args.api)
    else:
        block = contextlib.nullcontext()
    with block:
        model = SmallConvNet()
        ddp = DistributedDataParallel(model, bucket_cap_mb=1, gradient_as_bucket_view=args.bucket_view)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
        extra, extra_line = None, 0
        if rank == 1 and args.extra_mib:
            extra = torch.ones(args.extra_mib * MiB // 4)  # rank 1's extra buffer
            extra_line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
        generator = torch.Generator().manual_seed(rank)
        x = torch.randn(8, 3, 32, 32, generator=generator)
        y = torch.randint(0, 10, (8,), generator=generator)
        for _ in range(args.steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
    if args.truth is not None:
        facts = truth(rank, model, ddp, opt, extra, extra_line, (x, y))
        facts["steps"] = args.steps
        if args.api is not None:  # outside the profile: this allocates a copy of every bucket
            facts["zeros_like_bucket_bytes"] = [_bytes(b.buffer()) for b in ddp.reducer._get_zeros_like_grad_buckets()]
        args.truth.mkdir(parents=True, exist_ok=True)
        (args.truth / f"truth.rank{rank}.json").write_text(json.dumps(facts, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
