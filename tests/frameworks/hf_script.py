"""The Hugging Face advice run (tests/frameworks/test_hf_advice.py runs it in a fresh
process): a tiny BERT built from its config, trained by `Trainer.train()` in a cell of
its own; each suggestion's code applied and the cell profiled again."""

from __future__ import annotations

import sys
import tempfile

sys.path.insert(0, sys.argv[1])  # the repository: tests.frameworks

from IPython.testing.globalipapp import start_ipython  # noqa: E402

from memprofile.analysis.rules import suggest  # noqa: E402
from tests.frameworks.advice_run import added, apply_and_measure, emit, near_capacity, profiled, report  # noqa: E402

ip = start_ipython()
ip.run_line_magic("load_ext", "memprofile")
ip.run_cell(f"""
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
torch.manual_seed(0)

class Data(torch.utils.data.Dataset):
    def __init__(self, vocab, length):
        self.vocab, self.length = vocab, length
    def __len__(self):
        return 4096
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {{"input_ids": torch.randint(0, self.vocab, (self.length,), generator=g), "labels": torch.tensor(i % 2)}}

def bert(hidden, layers, vocab=1000):
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=4 * hidden, max_position_embeddings=128)
    return BertForSequenceClassification(config)

model = bert(128, 4)
args = TrainingArguments(output_dir="{tempfile.mkdtemp()}", max_steps=2, per_device_train_batch_size=32,
                         report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                         disable_tqdm=True, dataloader_num_workers=0)
# a bare 2-step run first: a first train()'s lazy imports and pools are the process's own
warm_args = TrainingArguments(**{{**args.to_dict(), "max_steps": 2}})
Trainer(model=model, args=warm_args, train_dataset=Data(1000, 128)).train()
trainer = Trainer(model=model, args=args, train_dataset=Data(1000, 128))
original = trainer
""")
CELL = "trainer.train()"
out: dict = {}
before = profiled(ip, CELL, "hf_before")
t = before.trainer
out["trainer"] = None if t is None else {**t.__dict__}
out["suggestions"] = {s.id: s.code for s in before.suggestions}
out["results"] = []
near_capacity(before)
found = {s.id: s for s in suggest(before)}
# amp, then the batch, then checkpointing (it stays enabled on the model): each from the original trainer
for rule in ("amp", "batch_size", "gradient_checkpointing"):
    s = found.get(rule)
    if s is None:
        continue
    ip.run_cell("trainer = original")
    out["results"].append(report(before, s, apply_and_measure(ip, CELL, s, f"hf_{rule}")))
ip.run_cell("model.gradient_checkpointing_disable()")

# The optimizer's state: a deeper BERT, small batches (its state is most of the peak), built in the cell
OPT_CELL = """\
args2 = TrainingArguments(output_dir=args.output_dir, max_steps=2, per_device_train_batch_size=2, report_to=[],
                          save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
trainer2 = Trainer(model=deep, args=args2, train_dataset=Data(1000, 16))
trainer2.train()"""
ip.run_cell("deep = bert(256, 6)")
before2 = profiled(ip, OPT_CELL, "hf_opt_before")
out["opt_trainer"] = None if before2.trainer is None else {**before2.trainer.__dict__}
s = next((s for s in before2.suggestions if s.id == "optimizer_state"), None)
out["opt_suggestion"] = None if s is None else s.code
if s is not None:
    out["results"].append(report(before2, s, apply_and_measure(ip, OPT_CELL, s, "hf_optim")))
out["opt_before"] = added(before2)

# The trainer is found from the stack in every shape of code: a function from another cell (its
# trainer a local: no variable), an imported module's loop, profile(), @profiled, a subclass.
folder = tempfile.mkdtemp()
with open(f"{folder}/train_lib.py", "w") as fh:
    fh.write("def run(trainer):\n    return trainer.train()\n")
sys.path.insert(0, folder)
ip.run_cell("""
import memprofile, train_lib
small = bert(64, 1)
one = TrainingArguments(output_dir=args.output_dir, max_steps=1, per_device_train_batch_size=4, report_to=[],
                        save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
class MyTrainer(Trainer):
    pass
shape_trainer = MyTrainer(model=small, args=one, train_dataset=Data(1000, 16))
def train_in_a_function():
    local = Trainer(model=small, args=one, train_dataset=Data(1000, 16))
    return local.train()
@memprofile.profiled(name="decorated")
def decorated():
    return shape_trainer.train()
""")


def named(p) -> dict | None:
    t = p.trainer
    return None if t is None else {"framework": t.framework, "type": t.type, "variable": t.variable}


shapes = {
    "function": named(profiled(ip, "train_in_a_function()", "shape_function")),
    "module": named(profiled(ip, "train_lib.run(shape_trainer)", "shape_module")),
}
ip.run_cell("with memprofile.profile(name='block') as block:\n    shape_trainer.train()")
shapes["block"] = named(ip.user_ns["block"])
ip.run_cell("decorated()")
shapes["profiled"] = named(ip.user_ns["decorated"].profile)
# a hand-written loop: no trainer
ip.run_cell(
    "opt = torch.optim.SGD(small.parameters(), lr=0.1)\n"
    "batch = {'input_ids': torch.randint(0, 1000, (4, 16)), 'labels': torch.zeros(4, dtype=torch.long)}"
)
shapes["loop"] = named(profiled(ip, "small(**batch).loss.backward()\nopt.step()", "shape_loop"))
out["shapes"] = shapes
emit(out)
