"""The Lightning advice run (tests/frameworks/test_lightning_advice.py runs it in a fresh
process): a LightningModule of MLP blocks, trained by a `Trainer` the cell builds; each
suggestion's code applied as Insert fix would and the cell profiled again."""

from __future__ import annotations

import sys

sys.path.insert(0, sys.argv[1])  # the repository: tests.frameworks

from IPython.testing.globalipapp import start_ipython  # noqa: E402

from memprofile.analysis.rules import suggest  # noqa: E402
from tests.frameworks.advice_run import added, apply_and_measure, emit, near_capacity, profiled, report  # noqa: E402

ip = start_ipython()
ip.run_line_magic("load_ext", "memprofile")
ip.run_cell("""
import logging
import torch
import lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
torch.manual_seed(0)

class Blocks(L.LightningModule):
    def __init__(self, width=256, hidden=1024, depth=6):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)) for _ in range(depth)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

data = TensorDataset(torch.randn(8192, 256), torch.randint(0, 10, (8192,)))
quiet = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)
model = Blocks()
L.Trainer(max_steps=2, **quiet).fit(model, DataLoader(data, batch_size=64))  # first fit's imports and pools
""")
CELL = """\
loader = DataLoader(data, batch_size=1024)
trainer = L.Trainer(max_steps=3, **quiet)
trainer.fit(model, loader)"""
out: dict = {"results": []}
ip.run_cell(CELL)  # warm: what an earlier run of the cell leaves (its trainer) is there for every run measured
before = profiled(ip, CELL, "l_before")
out["trainer"] = None if before.trainer is None else {**before.trainer.__dict__}
out["suggestions"] = {s.id: s.code for s in before.suggestions}
near_capacity(before)
found = {s.id: s for s in suggest(before)}
for rule in ("amp", "batch_size", "gradient_checkpointing"):  # checkpointing last: it patches the model
    s = found.get(rule)
    if s is not None:
        out["results"].append(report(before, s, apply_and_measure(ip, CELL, s, f"l_{rule}")))

# The optimizer's state: small batches, a fresh module of the same class
OPT_CELL = """\
small = DataLoader(data, batch_size=8)
trainer2 = L.Trainer(max_steps=3, **quiet)
trainer2.fit(net, small)"""
ip.run_cell("net = Blocks(hidden=4096, depth=2)")
ip.run_cell(OPT_CELL)  # warm, as above
before2 = profiled(ip, OPT_CELL, "l_opt_before")
out["opt_trainer"] = None if before2.trainer is None else {**before2.trainer.__dict__}
out["opt_suggestions"] = {s.id: s.code for s in before2.suggestions}
s = next((s for s in before2.suggestions if s.id == "optimizer_state"), None)
if s is not None:
    out["results"].append(report(before2, s, apply_and_measure(ip, OPT_CELL, s, "l_optim")))
out["opt_before"] = added(before2)

# `memprofile run` of a script: the trainer is found from the stack there too, named by the script's globals
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import memprofile  # noqa: E402

folder = tempfile.mkdtemp()
with open(f"{folder}/train.py", "w") as fh:
    fh.write(
        "import torch, lightning as L\n"
        "from torch import nn\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "class Tiny(L.LightningModule):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = nn.Linear(16, 1)\n"
        "    def training_step(self, batch, i):\n"
        "        return self.net(batch[0]).pow(2).mean()\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=0.1)\n"
        "module = Tiny()\n"
        "fitter = L.Trainer(max_steps=2, accelerator='cpu', logger=False, enable_checkpointing=False,\n"
        "                   enable_progress_bar=False, enable_model_summary=False)\n"
        "fitter.fit(module, DataLoader(TensorDataset(torch.randn(64, 16)), batch_size=8))\n"
    )
done = subprocess.run(
    [sys.executable, "-m", "memprofile", "run", "-o", f"{folder}/run.json", f"{folder}/train.py"],
    capture_output=True,
    text=True,
    timeout=300,
    env=os.environ,
)
run_trainer = memprofile.load(f"{folder}/run.json").trainer if done.returncode == 0 else None
out["run"] = {"rc": done.returncode, "stderr": done.stderr[-2000:], "trainer": run_trainer and {**run_trainer.__dict__}}
emit(out)
