"""Will it fit, predicted against measured: eight model families the engine was not written on.

Each workload is a notebook (setup, then a cell) run in a real IPython shell with the
extension. The cell is profiled at a small batch; `p.predict("cpu", batch="4x")`, `"8x"`
(and `seq_len="2x"` for the sequence models) come from that one run; then the cell is
profiled for real at each size, and the prediction's allocated peak is compared with
the real run's (the torch allocator's peak, on this CPU). The cost of a prediction is
its time against a bare CPU step of the small cell, and the torch memory it allocated
for real (the prediction profiled by memprofile itself: allocator peak over its start).

    python benchmarks/predict_accuracy.py [--write docs/suggestions.md] [--only NAME,...]
    python benchmarks/predict_accuracy.py --cost [--repeat 5] [--only NAME,...]

--write replaces the section between the PREDICT markers of the file. --cost measures only
the prediction's time (no real runs at the predicted sizes beyond one bare step there):
`predict("cpu", batch="8x", largest_batch=False)` paying for its base run, and
`predict("T4", batch="8x")` with its largest-batch search, against a bare CPU step at the
measured batch and at the predicted one, interleaved, the median of --repeat.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.fixes

import torch  # noqa: E402

import memprofile  # noqa: E402
from tests.fixes import harness  # noqa: E402

BAR = 0.03
BEGIN, END = "<!-- PREDICT:BEGIN -->", "<!-- PREDICT:END -->"

COMMON = """\
import torch
from torch import nn
import torch.nn.functional as F
torch.manual_seed(0)
torch.set_num_threads(1)
"""

TRAIN = """\
for _ in range(2):
    opt.zero_grad()
    loss = F.cross_entropy(net(xb), yb)
    loss.backward()
    opt.step()
"""

#: A transformers model computes its own loss from labels.
HF_TRAIN = """\
for _ in range(2):
    opt.zero_grad()
    net(input_ids=xb, labels=yb).loss.backward()
    opt.step()
"""


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    setup: str  # defines net, opt, and data(batch, seq) -> (xb, yb)
    batch: int
    seq: int | None = None  # the sequence length, for the sequence models
    cell: str = TRAIN


WORKLOADS = [
    Workload(
        "vit",
        "ViT-like: 4x4 patches of 32x32 images, 2 encoder layers d 128, 4 heads, AdamW",
        COMMON
        + """\
class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 128, 4, stride=4)
        self.pos = nn.Parameter(torch.zeros(1, 64, 128))
        layer = nn.TransformerEncoderLayer(128, 4, 256, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 10)
    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.encoder(x).mean(1))
net = ViT()
opt = torch.optim.AdamW(net.parameters())
def data(n, s=None):
    return torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
""",
        8,
    ),
    Workload(
        "unet",
        "UNet-like: 2 levels (16-32 ch) with skip concatenation, 64x64 masks, SGD momentum",
        COMMON
        + """\
def block(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU())
class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down1, self.down2 = block(3, 16), block(16, 32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = block(32, 16)
        self.out = nn.Conv2d(16, 2, 1)
    def forward(self, x):
        a = self.down1(x)
        b = self.down2(F.max_pool2d(a, 2))
        return self.out(self.dec(torch.cat([a, self.up(b)], 1)))
net = UNet()
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
def data(n, s=None):
    return torch.randn(n, 3, 64, 64), torch.randint(0, 2, (n, 64, 64))
""",
        4,
    ),
    Workload(
        "gru_tagger",
        "GRU tagger: 5,000 words, embedding 64, GRU 128, 16 tags, Adam",
        COMMON
        + """\
class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.gru, self.head = nn.Embedding(5000, 64), nn.GRU(64, 128, batch_first=True), nn.Linear(128, 16)
    def forward(self, w):
        return self.head(self.gru(self.emb(w))[0])
net = Tagger()
opt = torch.optim.Adam(net.parameters())
def data(n, s):
    return torch.randint(0, 5000, (n, s)), torch.randint(0, 16, (n, s))
""",
        8,
        32,
        cell=TRAIN.replace("F.cross_entropy(net(xb), yb)", "F.cross_entropy(net(xb).flatten(0, 1), yb.flatten())"),
    ),
    Workload(
        "resnet",
        "ResNet-like: stem + 3 basic blocks with BatchNorm (32-64 ch), 32x32, SGD momentum",
        COMMON
        + """\
class Basic(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        same = stride == 1 and i == o
        down = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o)) if not same else None
        self.skip = down or nn.Sequential()
    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                    Basic(32, 32, 1), Basic(32, 64, 2), Basic(64, 64, 1),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
def data(n, s=None):
    return torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
""",
        8,
    ),
    Workload(
        "bert",
        "BERT-like encoder from a transformers BertConfig (2 layers, hidden 128, 4 heads), classifier, AdamW",
        COMMON
        + """\
import transformers
transformers.logging.set_verbosity_error()
net = transformers.BertForSequenceClassification(transformers.BertConfig(
    vocab_size=3000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512))
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
def data(n, s):
    return torch.randint(0, 3000, (n, s)), torch.randint(0, 2, (n,))
""",
        4,
        64,
        cell=HF_TRAIN,
    ),
    Workload(
        "gpt",
        "GPT-like decoder from a transformers GPT2Config (2 layers, d 128, 4 heads, 5,000 words), LM loss, AdamW",
        COMMON
        + """\
import transformers
transformers.logging.set_verbosity_error()
config = transformers.GPT2Config(vocab_size=5000, n_positions=512, n_embd=128, n_layer=2, n_head=4)
net = transformers.GPT2LMHeadModel(config)
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
def data(n, s):
    ids = torch.randint(0, 5000, (n, s))
    return ids, ids
""",
        4,
        64,
        cell=HF_TRAIN,
    ),
    Workload(
        "mlp_large_head",
        "MLP with a large head: 512 -> 1,024 -> 50,000 classes, Adam",
        COMMON
        + """\
net = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 50000))
opt = torch.optim.Adam(net.parameters())
def data(n, s=None):
    return torch.randn(n, 512), torch.randint(0, 50000, (n,))
""",
        16,
    ),
    Workload(
        "cnn_eval",
        "CNN in evaluation: 3 conv stages with BatchNorm (32-128 ch), eval(), scores kept, no optimizer",
        COMMON
        + """\
def stage(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
net = nn.Sequential(stage(3, 32), stage(32, 64), stage(64, 128), nn.Flatten(), nn.Linear(128 * 4 * 4, 10)).eval()
def data(n, s=None):
    return torch.randn(n, 3, 32, 32), None
""",
        16,
        cell="scores = net(xb)\ntop = scores.argmax(1)\n",
    ),
]


def _load(ip, w: Workload, batch: int, seq: int | None) -> None:
    harness.run(ip, f"xb, yb = data({batch}, {seq})")
    harness.run(ip, w.cell)  # as a notebook would have run it: state exists before the profiled run


def _bare_step_s(ip, w: Workload) -> float:
    steps = max(1, w.cell.count("range(2)") * 2)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        harness.run(ip, w.cell)
        times.append((time.perf_counter() - t) / steps)
    return sorted(times)[1]


def measure(ip, w: Workload) -> list[dict]:
    harness.fresh(ip)
    harness.run(ip, w.setup)
    _load(ip, w, w.batch, w.seq)
    step_s = _bare_step_s(ip, w)
    small = harness.profile(ip, w.cell, f"{w.name} small")
    asks = [("4x", None), ("8x", None)] + ([(None, "2x")] if w.seq else [])
    rows = []
    for batch, seq in asks:
        small.__dict__.pop("_fake_bases", None)  # each prediction pays for its base run
        t = time.perf_counter()
        pred = small.predict("cpu", batch=batch, seq_len=seq, largest_batch=False)
        predict_s = time.perf_counter() - t
        small.__dict__.pop("_fake_bases", None)
        cost = memprofile.profile(name="prediction", store=False, namespace={})
        with cost:  # the same prediction again, its real torch memory measured
            small.predict("cpu", batch=batch, seq_len=seq, largest_batch=False)
        spent = cost.profile.peak_device
        real_bytes = (spent.peak_bytes - spent.baseline_bytes) if spent is not None and spent.kind == "allocator" else 0
        n = w.batch * int((batch or "1x")[:-1])
        s = w.seq * int((seq or "1x")[:-1]) if w.seq else None
        _load(ip, w, n, s)
        real = harness.profile(ip, w.cell, f"{w.name} {n}x{s}").peak_device.peak_bytes
        _load(ip, w, w.batch, w.seq)
        rows.append(
            dict(
                workload=w.name,
                label=w.label,
                ask=f"batch {batch}" if batch else f"seq {seq}",
                size=(n, s),
                predicted=pred.allocated_peak_bytes,
                real=real,
                method=pred.method,
                error=(pred.allocated_peak_bytes - real) / real,
                predict_s=predict_s,
                step_s=step_s,
                predict_bytes=real_bytes,
            )
        )
        r = rows[-1]
        print(
            f"{w.name:15s} {r['ask']:9s} predicted {pred.allocated_peak_bytes:>12,} real {real:>12,} "
            f"{r['error']:+.2%} ({pred.method}) predict {predict_s:.2f}s = {predict_s / step_s:.1f} steps, "
            f"real memory {real_bytes / max(1, pred.allocated_peak_bytes):.1%}",
            flush=True,
        )
    return rows


def _counted_fake_runs() -> list[int]:
    """A counter of the engine's fake runs (the largest-batch search's included)."""
    import memprofile.whatif.predict as predict_module

    count = [0]
    run = predict_module.fake_run

    def counted(*args, **kwargs):
        count[0] += 1
        return run(*args, **kwargs)

    predict_module.fake_run = counted
    return count


def cost(ip, w: Workload, repeat: int) -> dict:
    """The prediction's time against bare CPU steps at the measured and the predicted batch:
    interleaved (the machine is shared), the median of `repeat` each."""
    import statistics

    harness.fresh(ip)
    harness.run(ip, w.setup)
    _load(ip, w, w.batch, w.seq)
    small = harness.profile(ip, w.cell, f"{w.name} small")
    runs = _counted_fake_runs()
    times: dict[str, list[float]] = {"predict": [], "search": [], "step": [], "step_8x": []}
    searched = []
    for _ in range(repeat):
        small.__dict__.pop("_fake_bases", None)  # each prediction pays for its base run
        t = time.perf_counter()
        small.predict("cpu", batch="8x", largest_batch=False)
        times["predict"].append(time.perf_counter() - t)
        small.__dict__.pop("_fake_bases", None)
        runs[0] = 0
        t = time.perf_counter()
        pred = small.predict("T4", batch="8x")
        times["search"].append(time.perf_counter() - t)
        searched.append(runs[0])
        times["step"].append(_bare_step_s(ip, w))
        _load(ip, w, w.batch * 8, w.seq)
        times["step_8x"].append(_bare_step_s(ip, w))
        _load(ip, w, w.batch, w.seq)
    row = {k: statistics.median(v) for k, v in times.items()}
    row.update(workload=w.name, search_runs=max(searched), largest=pred.largest_batch, method=pred.method)
    print(
        f"{w.name:15s} predict {row['predict']:.3f} s = {row['predict'] / row['step']:.1f} steps at "
        f"batch {w.batch}, {row['predict'] / row['step_8x']:.2f} at {8 * w.batch}; with the T4 search "
        f"{row['search']:.3f} s ({row['search_runs']} fake runs, largest {row['largest']}) = "
        f"{row['search'] / row['step_8x']:.1f} steps at {8 * w.batch}; step {row['step'] * 1e3:.1f} ms, "
        f"at 8x {row['step_8x'] * 1e3:.1f} ms",
        flush=True,
    )
    return row


def markdown(rows: list[dict]) -> str:
    from memprofile.units import fmt_bytes

    out = [
        BEGIN,
        "## Will it fit: predicted vs measured",
        "",
        f"Produced by `python benchmarks/predict_accuracy.py --write docs/suggestions.md` (torch {torch.__version__}, "
        f"Python {platform.python_version()}, CPU, one thread). Each workload's cell is profiled at its small size; "
        '`p.predict("cpu", batch="4x")`, `"8x"` (and `seq_len="2x"`) come from that one run, against the '
        "same cell profiled for real at that size (the torch allocator's peak). Bar: within 3 %. Cost: the "
        "prediction's time over a bare CPU step of the small cell, and the torch memory it allocated for real "
        "(memprofile profiling the prediction) over the peak it predicts.",
        "",
        "| workload | asked | size | predicted | measured | error | within 3 % | method | time (steps) | real memory |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, s = r["size"]
        out.append(
            f"| {r['workload']}: {r['label']} | {r['ask']} | {n}" + (f"x{s}" if s else "") + f" | "
            f"{fmt_bytes(r['predicted'])} | {fmt_bytes(r['real'])} | {r['error']:+.1%} | "
            f"{'yes' if abs(r['error']) <= BAR else 'no'} | {r['method']} | {r['predict_s']:.2f} s "
            f"({r['predict_s'] / r['step_s']:.1f}) | {r['predict_bytes'] / max(1, r['predicted']):.1%} |"
        )
    ok = sum(abs(r["error"]) <= BAR for r in rows)
    out += ["", f"{ok} of {len(rows)} predictions within 3 %.", END, ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH")
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--cost", action="store_true", help="the prediction's time only")
    parser.add_argument("--repeat", type=int, default=5, help="--cost: repetitions (the median)")
    args = parser.parse_args()
    ip = harness.shell()
    chosen = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]
    if args.cost:
        for w in chosen:
            cost(ip, w, args.repeat)
        return 0
    rows = [r for w in chosen for r in measure(ip, w)]
    if args.write:
        path = Path(args.write)
        text = path.read_text() if path.exists() else ""
        section = markdown(rows)
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1 :]
        else:
            text = text.rstrip("\n") + "\n\n" + section
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
