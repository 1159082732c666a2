"""Notebooks for the optimizer-step advice, written after the rule: no part of
it was tuned on them. Each trains a parameter-heavy model on a small batch,
so the peak can fall inside `optimizer.step()` (the quickstart's shape, in
other families), plus one where the activations make the peak elsewhere.
"""

from __future__ import annotations

from tests.fixes.workloads import COMMON, Workload

# An MLP classifier with a large output head (20,000 classes), AdamW made
# before the cell, gradients freed by zero_grad() (its default).
MLP_HEAD = Workload(
    name="mlp_large_head",
    label="MLP 512-1024 with a 20,000-class head (AdamW), batch 64, 3 steps",
    setup=COMMON
    + """\
classifier = nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 1024), nn.GELU(), nn.Linear(1024, 20000))
adamw = torch.optim.AdamW(classifier.parameters(), lr=3e-4, weight_decay=0.05)
feats, classes = torch.randn(64, 512), torch.randint(0, 20000, (64,))
""",
    cell="""\
for _ in range(3):
    adamw.zero_grad()
    F.cross_entropy(classifier(feats), classes).backward()
    adamw.step()
""",
)

# A GRU sequence tagger: embedding, bidirectional GRU, per-step tags; Adam
# created in the cell (its line is the one the fix rewrites).
GRU_TAGGER = Workload(
    name="gru_tagger",
    label="GRU tagger (20,000 words x 256, 2-layer GRU 512), batch 4x32, Adam made in the cell",
    setup=COMMON
    + """\
class GRUTagger(nn.Module):
    def __init__(self, vocab=20000, d=256, hidden=512, n_tags=40):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.gru = nn.GRU(d, hidden, num_layers=2, batch_first=True)
        self.tag = nn.Linear(hidden, n_tags)

    def forward(self, ids):
        return self.tag(self.gru(self.emb(ids))[0])


gru_tagger = GRUTagger()
ids, gold = torch.randint(0, 20000, (4, 32)), torch.randint(0, 40, (4, 32))
""",
    cell="""\
tag_opt = torch.optim.Adam(gru_tagger.parameters(), lr=1e-3)
for _ in range(2):
    tag_opt.zero_grad(set_to_none=True)
    F.cross_entropy(gru_tagger(ids).flatten(0, 1), gold.flatten()).backward()
    tag_opt.step()
""",
)

VIT_DEFS = (
    COMMON
    + """\
class PatchViT(nn.Module):
    \"\"\"A small vision transformer: 8x8 patches, 4 encoder layers, a class token.\"\"\"

    def __init__(self, d=384, depth=4, classes=100):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, stride=8)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 17, d))
        layer = nn.TransformerEncoderLayer(d, 6, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, images):
        h = self.patch(images).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(len(h), -1, -1), h], 1) + self.pos
        return self.head(self.encoder(h)[:, 0])
"""
)

# A ViT-like model, small images and batch: parameters outweigh activations.
VIT = Workload(
    name="vit_small",
    label="ViT-like (4 layers, d 384, 8x8 patches of 32x32 images), batch 8, AdamW",
    setup=VIT_DEFS
    + """\
vit = PatchViT()
vit_opt = torch.optim.AdamW(vit.parameters(), lr=1e-3)
pictures, targets = torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))
""",
    cell="""\
for _ in range(2):
    vit_opt.zero_grad()
    F.cross_entropy(vit(pictures), targets).backward()
    vit_opt.step()
""",
)

# The same ViT on a large batch: activations make the peak in the backward,
# where the step's temporaries are long gone: fused=True saves nothing there.
VIT_BIG_BATCH = Workload(
    name="vit_big_batch",
    label="ViT-like as above, batch 256: the peak is in the backward",
    setup=VIT_DEFS
    + """\
vit = PatchViT()
vit_opt = torch.optim.AdamW(vit.parameters(), lr=1e-3)
pictures, targets = torch.randn(256, 3, 32, 32), torch.randint(0, 100, (256,))
""",
    cell=VIT.cell,
)

STEP_BOUND = (MLP_HEAD, GRU_TAGGER, VIT)
