"""Notebooks written for the fix tests: no rule was developed on them.

Each workload is the source of notebook cells, run in a real IPython shell:
`setup` (models, optimizers, data; run once, not profiled) and `cell` (the
cell the user profiles). Three model families - a transformer language model
whose loss is computed in the cell, a CNN with BatchNorm, an LSTM - each
trained and run forward-only, plus a notebook with two models and a model
built inside the cell. Names differ from the ones the rules were tuned on
(`model`, `opt`, `x`) on purpose: a fix must use the cell's own names.

`expect` says, per rule module (analysis/rules/<name>.py), whether the rule
must fire ("fires"), must stay quiet ("quiet"), or either ("either": what it
does is measured and recorded, only its claim is checked). `by_hand` holds,
for rules whose code is a template the user adapts (sdpa), the change the
template describes, applied to this workload as a cell below.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    setup: str
    cell: str
    expect: dict[str, str] = field(default_factory=dict)
    by_hand: dict[str, str] = field(default_factory=dict)


COMMON = """\
import torch
from torch import nn
import torch.nn.functional as F
torch.manual_seed(0)
torch.set_num_threads(1)
"""

# A GPT-style decoder: attention written out by hand (as in most tutorials),
# an 8,000-word head, and nothing that computes the loss inside a module.
LM_DEFS = (
    COMMON
    + """\
class CausalSelfAttention(nn.Module):
    fused = False  # the workload's own switch to F.scaled_dot_product_attention

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, h):
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            y = att.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), CausalSelfAttention(d, heads)
        self.ln2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h):
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class TinyLM(nn.Module):
    def __init__(self, vocab=8000, d=128, heads=4, n_layers=3, ctx=256):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.layers = nn.ModuleList(DecoderLayer(d, heads) for _ in range(n_layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        h = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for layer in self.layers:
            h = layer(h)
        return self.head(self.ln_f(h))
"""
)

LM_TRAIN = Workload(
    name="lm_train",
    label="transformer LM (3 layers, d 128, 8,000-word head), batch 4x256, AdamW, loss in the cell",
    setup=LM_DEFS
    + """\
lm = TinyLM()
optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-4)
tokens = torch.randint(0, 8000, (4, 257))
""",
    cell="""\
inputs, targets = tokens[:, :-1], tokens[:, 1:]
logits = lm(inputs)
loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
loss.backward()
optimizer.step()
optimizer.zero_grad(set_to_none=True)
""",
    # the cell already frees its gradients after the step; AdamW state is
    # about a third of the peak, so optimizer_state may speak
    expect={
        "zero_grad": "quiet",
        "inference_mode": "quiet",
        "quantize_dynamic": "quiet",
        "amp": "fires",
        "gradient_checkpointing": "fires",
        "sdpa": "fires",
    },
    by_hand={"sdpa": "CausalSelfAttention.fused = True"},
)

LM_EVAL = Workload(
    name="lm_eval",
    label="transformer LM forward only (scoring a batch 4x256), output kept",
    setup=LM_DEFS
    + """\
lm = TinyLM().eval()
tokens = torch.randint(0, 8000, (4, 256))
""",
    cell="""\
logits = lm(tokens)
next_token = logits[:, -1].argmax(-1)
""",
    expect={
        "inference_mode": "fires",
        "amp": "either",
        "zero_grad": "quiet",
        "optimizer_state": "quiet",
        "gradient_checkpointing": "quiet",
    },
    by_hand={"sdpa": "CausalSelfAttention.fused = True"},
)

CNN_DEFS = (
    COMMON
    + """\
def stage(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(stage(3, 32), stage(32, 64), stage(64, 128))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, classes))

    def forward(self, images):
        return self.classifier(self.features(images))
"""
)

CNN_TRAIN = Workload(
    name="cnn_train",
    label="CNN with BatchNorm (3 stages, 32-128 ch), batch 64x3x32x32, SGD momentum, zero_grad(set_to_none=False)",
    setup=CNN_DEFS
    + """\
net = SmallCNN()
sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
""",
    cell="""\
sgd.zero_grad(set_to_none=False)
scores = net(images)
loss = F.cross_entropy(scores, labels)
loss.backward()
sgd.step()
""",
    # parameters are ~1.4 MiB: nothing about gradients or optimizer state is worth a change
    expect={
        "amp": "fires",
        "gradient_checkpointing": "fires",
        "optimizer_state": "quiet",
        "zero_grad": "quiet",
        "inference_mode": "quiet",
        "sdpa": "quiet",
        "quantize_dynamic": "quiet",
    },
)

CNN_EVAL = Workload(
    name="cnn_eval",
    label="CNN with BatchNorm forward only (eval, batch 128x3x32x32), scores kept",
    setup=CNN_DEFS
    + """\
net = SmallCNN().eval()
test_images = torch.randn(128, 3, 32, 32)
""",
    cell="""\
scores = net(test_images)
predicted = scores.argmax(1)
""",
    expect={
        "inference_mode": "fires",
        "optimizer_state": "quiet",
        "zero_grad": "quiet",
        "gradient_checkpointing": "quiet",
        "sdpa": "quiet",
        "quantize_dynamic": "quiet",
    },
)

LSTM_DEFS = (
    COMMON
    + """\
class Tagger(nn.Module):
    \"\"\"Embeds tokens, runs a 2-layer LSTM over them, classifies every step.\"\"\"

    def __init__(self, vocab=10000, d=128, hidden=512, tags=50):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, tags)

    def forward(self, words):
        states, _ = self.rnn(self.embed(words))
        return self.out(states)
"""
)

LSTM_TRAIN = Workload(
    name="lstm_train",
    label="LSTM tagger (10,000 words, 2 layers, hidden 512), batch 8x100, Adam, zero_grad(set_to_none=False)",
    setup=LSTM_DEFS
    + """\
tagger = Tagger()
adam = torch.optim.Adam(tagger.parameters(), lr=1e-3)
words, tags = torch.randint(0, 10000, (8, 100)), torch.randint(0, 50, (8, 100))
""",
    cell="""\
adam.zero_grad(set_to_none=False)
emissions = tagger(words)
loss = F.cross_entropy(emissions.flatten(0, 1), tags.flatten())
loss.backward()
adam.step()
""",
    # 19 MiB of parameters: Adam's state and the stale gradients are a real share of the peak
    expect={
        "optimizer_state": "fires",
        "zero_grad": "fires",
        "inference_mode": "quiet",
        "sdpa": "quiet",
        "quantize_dynamic": "quiet",
    },
)

LSTM_EVAL = Workload(
    name="lstm_eval",
    label="LSTM tagger forward only (batch 16x100), emissions kept",
    setup=LSTM_DEFS
    + """\
tagger = Tagger().eval()
sentences = torch.randint(0, 10000, (16, 100))
""",
    cell="""\
emissions = tagger(sentences)
best = emissions.argmax(-1)
""",
    expect={
        "inference_mode": "fires",
        "optimizer_state": "quiet",
        "zero_grad": "quiet",
        "gradient_checkpointing": "quiet",
        "sdpa": "quiet",
    },
)

# A param-heavy autoencoder on tabular rows, the whole table held in memory
# as one tensor and sliced into batches; gradients zeroed, not freed.
AUTOENCODER = Workload(
    name="autoencoder_train",
    label="MLP autoencoder on tabular rows (1024-2048-256, 21 MiB), table of 20,000 rows held whole, "
    "Adam, zero_grad(set_to_none=False), 2 batches of 512",
    setup=COMMON
    + """\
encoder = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 256))
decoder = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 1024))
autoencoder = nn.Sequential(encoder, decoder)
trainer = torch.optim.Adam(autoencoder.parameters(), lr=1e-3)
table = torch.randn(20000, 1024)
""",
    cell="""\
for first in (0, 512):
    rows = torch.as_tensor(table[first:first + 512])
    trainer.zero_grad(set_to_none=False)
    F.mse_loss(autoencoder(rows), rows).backward()
    trainer.step()
""",
    expect={
        "optimizer_state": "fires",
        "zero_grad": "fires",
        "stream_dataset": "fires",
        "inference_mode": "quiet",
        "sdpa": "quiet",
        "quantize_dynamic": "quiet",
    },
)

# A large model trained earlier in the notebook (its AdamW state exists), then
# a cell that trains a small MLP with its own Adam: advice about optimizer
# state must be about the small one, which is not worth a change.
TWO_MODELS = Workload(
    name="two_models",
    label="notebook with two models: a 27 MiB LM trained earlier, the cell trains a 1 MiB MLP with its own Adam",
    setup=LM_DEFS
    + """\
big = TinyLM(d=256, n_layers=2)
big_opt = torch.optim.AdamW(big.parameters(), lr=3e-4)
sample = torch.randint(0, 8000, (2, 64))
F.cross_entropy(big(sample).flatten(0, 1), sample.flatten()).backward()
big_opt.step()
big_opt.zero_grad(set_to_none=True)
del sample

probe = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 2))
probe_opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
features, answers = torch.randn(4096, 256), torch.randint(0, 2, (4096,))
""",
    cell="""\
for start in range(0, 4096, 2048):
    probe_opt.zero_grad()
    F.cross_entropy(probe(features[start:start + 2048]), answers[start:start + 2048]).backward()
    probe_opt.step()
""",
    expect={
        "optimizer_state": "quiet",
        "zero_grad": "quiet",
        "inference_mode": "quiet",
        "sdpa": "quiet",
        "quantize_dynamic": "quiet",
    },
)

# The model, its optimizer and the data are made inside the profiled cell.
BUILT_IN_CELL = Workload(
    name="built_in_cell",
    label="model built inside the cell: conv net (3 blocks x 48 ch) + Adam, 2 steps, batch 16x3x32x32",
    setup=COMMON,
    cell="""\
conv = nn.Sequential(
    nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.BatchNorm2d(48), nn.GELU(), \
nn.Conv2d(48, 48, 3, padding=1), nn.GELU()),
    nn.Sequential(nn.Conv2d(48, 48, 3, padding=1), nn.BatchNorm2d(48), nn.GELU(), \
nn.Conv2d(48, 48, 3, padding=1), nn.GELU()),
    nn.Sequential(nn.Conv2d(48, 48, 3, padding=1), nn.BatchNorm2d(48), nn.GELU(), \
nn.Conv2d(48, 48, 3, padding=1), nn.GELU()),
    nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 5)),
)
conv_opt = torch.optim.Adam(conv.parameters(), lr=1e-3)
batch, target = torch.randn(16, 3, 32, 32), torch.randint(0, 5, (16,))
for _ in range(2):
    conv_opt.zero_grad(set_to_none=True)
    F.cross_entropy(conv(batch), target).backward()
    conv_opt.step()
""",
    expect={
        "zero_grad": "quiet",
        "inference_mode": "quiet",
        "sdpa": "quiet",
        "quantize_dynamic": "quiet",
        "optimizer_state": "quiet",
    },
)

WORKLOADS = (LM_TRAIN, CNN_TRAIN, LSTM_TRAIN, AUTOENCODER, LM_EVAL, CNN_EVAL, LSTM_EVAL, TWO_MODELS, BUILT_IN_CELL)
BY_NAME = {w.name: w for w in WORKLOADS}
