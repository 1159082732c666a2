"""The recorded H100 trace's run predicted from a CPU run of the same model: its PROVENANCE
says HF `gaunernst/bert-small-uncased`, bf16 inference, batch 1, sequence 512 (4 layers,
hidden 512, 8 heads, intermediate 2048, vocabulary 30,522). The trace's allocated peak
is 101,305,344 B; the prediction must be within 10 %."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.cells import run_cell as _run  # noqa: E402

# the shell is the session's: the names these cells bind are put back after each test
pytestmark = pytest.mark.usefixtures("names_back")


TRACE = (
    Path(__file__).parents[1] / "fixtures" / "gpu" / "pt_trace_h100_torch2.6_bert-small_profile_memory.pt.trace.json.gz"
)
SETUP = """
import os
os.environ["USE_TF"] = "0"
import torch, transformers
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                                 intermediate_size=2048)
bert = transformers.BertModel(config).to(torch.bfloat16).eval()
ids = torch.randint(0, 30522, (1, 512))
"""
CELL = "with torch.inference_mode():\n    out = bert(input_ids=ids)\n"


def _trace_allocated_peak() -> int:
    events = json.loads(gzip.decompress(TRACE.read_bytes()))["traceEvents"]
    return max(
        e["args"]["Total Allocated"]
        for e in events
        if e.get("name") == "[memory]" and e["args"].get("Device Type") == 1
    )


@pytest.mark.slow
def test_the_h100_traces_run_predicted_from_a_cpu_run(ip, fresh_store):
    truth = _trace_allocated_peak()
    assert truth == 101_305_344
    _run(ip, SETUP)
    _run(ip, CELL)
    p = _run(ip, "%%memprofile -q -n bert-small\n" + CELL)
    pred = p.predict("H100-80GB", largest_batch=False)
    assert pred.method == "fake execution", pred.notes
    assert pred.batch == 1 and pred.seq_len == 512
    assert pred.allocated_peak_bytes == pytest.approx(truth, rel=0.10)
    assert pred.fits
