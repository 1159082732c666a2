"""Small real PyTorch workloads shared by the rule and trial tests."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """A pre-norm residual MLP block: what checkpointing and autocast act on."""

    def __init__(self, d=256, hidden=1024):
        super().__init__()
        self.norm, self.up, self.act, self.down = nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x))))


def training(model, x, set_to_none=True, optimizer=torch.optim.Adam):
    """A training step (run once, so the optimizer state exists) and its namespace."""
    opt = optimizer(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=set_to_none)
        model(x).square().mean().backward()
        opt.step()

    step()
    return step, {"model": model, "opt": opt, "x": x}
