"""Notebooks the rules in issue 29's failure list were tried on (not the ones
they were written on): a small CNN trained in a loop with its loss in the
cell, a BERT-like encoder built from a `transformers` config inside the
profiled cell, a model that checkpoints its own blocks in `forward`, an
evaluation cell that keeps graph-holding outputs. Same shape as
workloads.py (setup runs once unprofiled, cell is profiled)."""

from __future__ import annotations

from tests.fixes.workloads import COMMON, Workload

CNN_LOOP = Workload(
    name="cnn_loop",
    label="small CNN (2 conv stages, 16-32 ch), batch 32x3x32x32, 2 SGD steps in a loop, loss in the cell",
    setup=COMMON
    + """\
cnn = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 8 * 8, 1024), nn.ReLU(), nn.Linear(1024, 10),
)
step = torch.optim.SGD(cnn.parameters(), lr=0.01)
pictures, classes = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
""",
    cell="""\
for _ in range(2):
    step.zero_grad()
    out = cnn(pictures)
    loss = F.cross_entropy(out, classes)
    loss.backward()
    step.step()
""",
)

# A BERT-like encoder from a transformers config, built inside the profiled
# cell (its classifier head too), one AdamW step on a batch of 8x128.
BERT_IN_CELL = Workload(
    name="bert_in_cell",
    label="BERT-like classifier (transformers BertConfig, 4 layers, hidden 256) built in the cell, batch 8x128, AdamW",
    setup=COMMON
    + """\
import transformers
transformers.logging.set_verbosity_error()
ids = torch.randint(0, 1000, (8, 128))
labels = torch.randint(0, 2, (8,))
""",
    cell="""\
config = transformers.BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                 intermediate_size=1024, max_position_embeddings=128, attn_implementation="eager")
clf = transformers.BertForSequenceClassification(config)
adamw = torch.optim.AdamW(clf.parameters(), lr=1e-4)
loss = clf(input_ids=ids, labels=labels).loss
loss.backward()
adamw.step()
""",
)

# A model that checkpoints its own blocks in forward when asked (the
# `use_checkpoint` flag of many vision and language model repositories).
SELF_CHECKPOINTED = Workload(
    name="self_checkpointed",
    label="MLP of 6 residual blocks (256 wide, batch 8192) that checkpoints them in forward (use_checkpoint=True), SGD",
    setup=COMMON
    + """\
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, h):
        return h + self.down(F.gelu(self.up(h)))


class Tower(nn.Module):
    def __init__(self, d=256, depth=6, use_checkpoint=True):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.head = nn.Linear(d, 1)

    def forward(self, h):
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=False) if self.use_checkpoint else block(h)
        return self.head(h)


tower = Tower()
plain = torch.optim.SGD(tower.parameters(), lr=1e-3)
rows, target = torch.randn(8192, 256), torch.randn(8192, 1)
""",
    cell="""\
plain.zero_grad()
F.mse_loss(tower(rows), target).backward()
plain.step()
""",
)

# An evaluation cell without no_grad: one output and a list of four more,
# each holding the autograd graph of its own forward pass.
EVAL_KEPT = Workload(
    name="eval_kept",
    label="MLP (2048-4096-4096-10) in eval, batch 512, called five times without no_grad: "
    "out (shown) and preds[0..3] kept",
    setup=COMMON
    + """\
scorer = nn.Sequential(nn.Linear(2048, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10)).eval()
x = torch.randn(512, 2048)
""",
    cell="""\
out = scorer(x)
preds = [scorer(x) for _ in range(4)]
out
""",
)

# A training step in a function of an earlier cell that fails at the loss (a
# wrong target shape): its frames, kept by the traceback, hold the forward's tensors.
RAISED = Workload(
    name="raised",
    label="MLP step in a function (batch 4096, 1024-4096-1024) that raises at the loss: the traceback keeps its frames",
    setup=COMMON
    + """\
mlp = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024))
feats, wrong = torch.randn(4096, 1024), torch.randn(7)


def train_step():
    hidden = mlp(feats)
    return F.mse_loss(hidden, wrong.expand(4096, 1024, 2))
""",
    cell="train_step()\n",
)

# A 1-D convolutional audio tagger scored with autograd on (CPU oneDNN convolutions hold
# copies of their input and output inside the call: memory a fake run learns from the
# measured one, whatif/workspaces.py).
AUDIO_EVAL = Workload(
    name="audio_eval",
    label="1-D CNN audio tagger (4 Conv1d+BatchNorm stages, 64-256 ch), eval, batch 16x1x16000, scores kept",
    setup=COMMON
    + """\
def block(c_in, c_out, k):
    return nn.Sequential(nn.Conv1d(c_in, c_out, k, stride=2, padding=k // 2), nn.BatchNorm1d(c_out), nn.GELU())
tagger = nn.Sequential(block(1, 64, 9), block(64, 128, 5), block(128, 256, 5), block(256, 256, 3),
                       nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(256, 35)).eval()
clips = torch.randn(16, 1, 16000)
""",
    cell="""\
logits = tagger(clips)
top = logits.topk(3).indices
""",
)

# A GPT-2 decoder from a transformers config trained with its own LM loss: its blocks keep a
# key/value cache in forward, so a patched block.forward recomputed in backward raised
# torch.utils.checkpoint's CheckpointError ("different metadata").
GPT_TRAIN = Workload(
    name="gpt_train",
    label="GPT-2 decoder (transformers GPT2Config: 2 layers, d 128, 4 heads, 5,000 words), batch 16x64, AdamW",
    setup=COMMON
    + """\
import transformers
transformers.logging.set_verbosity_error()
config = transformers.GPT2Config(vocab_size=5000, n_positions=512, n_embd=128, n_layer=2, n_head=4)
gpt = transformers.GPT2LMHeadModel(config)
adamw = torch.optim.AdamW(gpt.parameters(), lr=1e-4)
ids = torch.randint(0, 5000, (16, 64))
""",
    cell="""\
adamw.zero_grad()
gpt(input_ids=ids, labels=ids).loss.backward()
adamw.step()
""",
)
