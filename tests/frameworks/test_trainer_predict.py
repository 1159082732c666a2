"""Will it fit for a cell that trains through Hugging Face's `Trainer`: the trainer's loop
cannot run again on fake tensors (it reads its data loader and changes its own state), so
the recorded timeline is replayed; its model is called with keyword arguments, so the run's
batch is the trainer's own `per_device_train_batch_size`, and an absolute batch
(`--predict T4:64`) and the largest batch are answered. Real transformers in a fresh IPython
shell of its own process (USE_TF=0: TensorFlow's Keras 3 kept away from transformers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

pytestmark = pytest.mark.slow

SCRIPT = r'''
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "memprofile")
def run(code):
    result = ip.run_cell(code)
    if result.error_in_exec is not None:
        raise result.error_in_exec
run("""
import tempfile, torch, memprofile, transformers
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 512
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"input_ids": torch.randint(0, 500, (64,), generator=g), "labels": torch.tensor(i % 2)}
model = BertForSequenceClassification(BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=256, max_position_embeddings=64))
out_dir = tempfile.mkdtemp()
def trainer_at(batch):
    args = TrainingArguments(output_dir=out_dir, max_steps=2, per_device_train_batch_size=batch, report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=Data())
trainer_at(4).train()  # the first train()'s lazy imports are the process's own
""")
import memprofile
run("trainer = trainer_at(4)")
run("%%memprofile -q -n small\ntrainer.train()")
small = memprofile.last()
predicted = small.predict("cpu", batch=16)
t4 = small.predict("T4", batch=16)
run("trainer = trainer_at(16)")
run("%%memprofile -q -n large\ntrainer.train()")
print("RESULT " + json.dumps({
    "method": predicted.method, "measured_batch": predicted.measured_batch, "batch": predicted.batch,
    "notes": predicted.notes, "predicted": predicted.allocated_peak_bytes,
    "real": memprofile.last().peak_device.peak_bytes, "t4_largest": t4.largest_batch,
}))
'''


def test_a_trainer_cell_is_predicted_at_an_absolute_batch(tmp_path):
    script = tmp_path / "trainer_predict.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "USE_TF": "0", "TRANSFORMERS_VERBOSITY": "error", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, str(script), root], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, out.stdout[-3000:] + out.stderr[-3000:]
    r = json.loads(line[len("RESULT ") :])
    # WHEN the small run is asked at batch 16 (before: "the run's own batch is unknown here; give a factor")
    # THEN the batch is the trainer's, and the replay is the real run's peak within 3 %
    assert (r["method"], r["measured_batch"], r["batch"]) == ("replay", 4, 16)
    assert any("Trainer" in n for n in r["notes"]), r["notes"]
    assert abs(r["predicted"] - r["real"]) <= 0.03 * r["real"], r
    # AND on a GPU it names the largest batch
    assert r["t4_largest"] > 16
