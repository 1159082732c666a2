"""Will it fit for a cell that trains through Hugging Face's `Trainer`: the trainer's loop
cannot run again on fake tensors (it reads its data loader and changes its own state), so
the recorded timeline is replayed; its model is called with keyword arguments, so the run's
batch is the trainer's own `per_device_train_batch_size`, and an absolute batch
(`--predict T4:64`) and the largest batch are answered. Real transformers, the session's
IPython shell."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from tests.cells import run_cell as _run  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("names_back")]

SETUP = """
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
"""


def test_a_trainer_cell_is_predicted_at_an_absolute_batch(ip, fresh_store):
    import memprofile

    _run(ip, SETUP)
    _run(ip, "trainer = trainer_at(4)")
    _run(ip, "%%memprofile -q -n small\ntrainer.train()")
    small = memprofile.last()
    # WHEN it is asked at batch 16 (before: "the run's own batch is unknown here; give a factor")
    predicted = small.predict("cpu", batch=16)
    # THEN the batch is the trainer's, and the replay is the real run's peak within 3 %
    assert (predicted.method, predicted.measured_batch, predicted.batch) == ("replay", 4, 16)
    assert any("Trainer" in n for n in predicted.notes), predicted.notes
    _run(ip, "trainer = trainer_at(16)")
    _run(ip, "%%memprofile -q -n large\ntrainer.train()")
    real = memprofile.last().peak_device.peak_bytes
    assert abs(predicted.allocated_peak_bytes - real) <= 0.03 * real, (predicted.allocated_peak_bytes, real)
    # AND on a GPU it names the largest batch
    assert small.predict("T4", batch=16).largest_batch > 16
