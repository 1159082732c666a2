"""Profile steps 1-3 of a Lightning `trainer.fit()` with memprofile's callback.

    python examples/integrations/lightning_fit.py --out profiles/
    torchrun --nproc-per-node 2 examples/integrations/lightning_fit.py --out profiles/
    memprofile merge profiles/          # the ranks' profiles, after a torchrun job

A small MLP on random data: it runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

try:
    import lightning as L
except ImportError:  # the older package name
    import pytorch_lightning as L  # type: ignore[no-redef]

from memprofile.integrations.lightning import MemprofileCallback


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU())
        self.head = nn.Linear(512, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def main(argv: list[str] | None = None) -> L.Trainer:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder (or .json.gz / .html file) for the profile")
    parser.add_argument("--steps", default="1-3", help="the optimizer steps to profile, e.g. 1-3")
    parser.add_argument("--max-steps", type=int, default=5)
    parser.add_argument("--bare", action="store_true", help="train without the callback")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(256, 64, generator=g), torch.randn(256, 1, generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    model = Regressor()

    devices = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: one process per device
    memory = MemprofileCallback(steps=args.steps, out=args.out)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=args.max_steps,
        callbacks=[] if args.bare else [memory],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)

    if memory.profile is not None:
        p = memory.profile
        print(f"peak {p.peak_bytes} B; steps {p.capture['steps']}; largest layers: {list(p.peak.by_layer)[:3]}")
    return trainer


if __name__ == "__main__":
    main()
