"""Estimate vs measured, per suggestion rule that can be tried in place.

For each workload: profile the step as it is (the rule's estimate comes from
that profile), then under the change ("try it" measures the saving: peak as
is minus peak changed, on the same device). The issue's bar: the estimate is
within 25 % of the measurement for amp, inference_mode and checkpointing.

    python benchmarks/suggestion_accuracy.py [--write docs/suggestions.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from torch import nn

import memprofile
from memprofile.units import fmt_bytes

BAR = 0.25


class Block(nn.Module):
    """A pre-norm residual MLP block (what checkpointing is usually applied to)."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x))))


class ConvBlock(nn.Module):
    """conv-bn-relu twice with a residual (a ResNet basic block)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.body(x))


def convnet(blocks=4, c=64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.Sequential(*[ConvBlock(c) for _ in range(blocks)]),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def transformer(layers=4, d=256, heads=8, ff=1024):
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, ff, batch_first=True, dropout=0.0), layers)


def residual_mlp(blocks=6, d=512, hidden=2048):
    torch.manual_seed(0)
    return nn.Sequential(*[Block(d, hidden) for _ in range(blocks)])


def training(model, x):
    opt = torch.optim.Adam(model.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()

    step()  # the optimizer state exists before the measured runs
    return step, {"model": model, "opt": opt, "x": x}


def forward_kept(model, x):
    held = {}

    def step():
        held["out"] = model(x)

    return step, {"model": model, "x": x, "held": held}


WORKLOADS = [
    ("amp", "transformer 4x256, batch 32x256, Adam", lambda: training(transformer(), torch.randn(32, 256, 256))),
    ("amp", "residual MLP 6x(512->2048), batch 4096, Adam",
     lambda: training(residual_mlp(), torch.randn(4096, 512))),
    ("inference_mode", "transformer 4x256 forward, output kept",
     lambda: forward_kept(transformer(), torch.randn(32, 256, 256))),
    ("inference_mode", "residual MLP forward, output kept",
     lambda: forward_kept(residual_mlp(), torch.randn(4096, 512))),
    ("amp", "ResNet-style CNN 4 blocks x 64 ch, batch 32x3x64x64, Adam",
     lambda: training(convnet(), torch.randn(32, 3, 64, 64))),
    ("inference_mode", "ResNet-style CNN forward, output kept", lambda: forward_kept(convnet(), torch.randn(32, 3, 64, 64))),
    ("checkpoint", "transformer 4x256, batch 32x256, Adam", lambda: training(transformer(), torch.randn(32, 256, 256))),
    ("checkpoint", "ResNet-style CNN 4 blocks x 64 ch, batch 32x3x64x64, Adam",
     lambda: training(convnet(), torch.randn(32, 3, 64, 64))),
    ("checkpoint", "residual MLP 6x(512->2048), batch 4096, Adam",
     lambda: training(residual_mlp(), torch.randn(4096, 512))),
]
SUGGESTION = {"amp": "amp", "inference_mode": "inference_mode", "checkpoint": "gradient_checkpointing"}


def measure(change: str, make) -> dict:
    step, namespace = make()
    probe = memprofile.profile(name="probe", namespace=namespace, store=False)
    with probe as p:
        step()
    suggestion = next((s for s in p.suggestions if s.id == SUGGESTION[change]), None)
    if suggestion is None:
        return {"estimate": None, "measured": None, "change": change, "fired": False}
    trial = memprofile.try_change(step, suggestion.try_change, namespace=namespace, store=False)
    tried = next(s for s in trial.before.suggestions if s.id == SUGGESTION[change])
    return {"estimate": tried.estimated_saving_bytes, "measured": trial.saving_bytes, "fired": True,
            "change": suggestion.try_change, "peak": trial.before.peak_bytes, "time": trial.time_change}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", metavar="PATH", help="write the table as markdown")
    args = parser.parse_args()
    rows, ok = [], True
    for change, label, make in WORKLOADS:
        r = measure(change, make)
        if not r["fired"]:
            ok = False
            rows.append(f"| {SUGGESTION[change]} | {label} | did not fire | | | |")
            print(f"{change:<15} {label:<50} did not fire")
            continue
        err = abs(r["estimate"] - r["measured"]) / r["measured"] if r["measured"] else float("inf")
        ok &= err <= BAR
        time = f"{100 * r['time']:+.0f} %" if r["time"] is not None else "-"
        rows.append(f"| {SUGGESTION[change]} | {label} | {fmt_bytes(r['peak'])} | {fmt_bytes(r['estimate'])} | "
                    f"{fmt_bytes(r['measured'])} | {100 * err:.0f} % | {time} |")
        print(f"{change:<15} {label:<50} peak {fmt_bytes(r['peak']):>10} estimate {fmt_bytes(r['estimate']):>10} "
              f"measured {fmt_bytes(r['measured']):>10} error {100 * err:4.0f} % time {time}")
    table = "\n".join([
        "| rule | workload (CPU) | peak as is | estimate | measured | error | time |",
        "|---|---|---|---|---|---|---|", *rows])
    if args.write:
        Path(args.write).write_text(
            "# Suggestions: estimate vs measured\n\n"
            "Produced by `python benchmarks/suggestion_accuracy.py --write docs/suggestions.md` "
            f"(torch {torch.__version__}, Python {platform.python_version()}, CPU). For each workload the step is "
            "profiled as it is (the estimate is the rule's, from that profile), then `try_change` runs it as is and "
            "changed and measures the saving (peak as is minus peak changed, same device). Bar: error <= 25 %.\n\n"
            f"{table}\n", encoding="utf-8")
    print("all within 25 %" if ok else "SOME OUTSIDE 25 %")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
