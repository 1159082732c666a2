"""A Hugging Face `Trainer.train()` cell (a library's training loop, none of
its lines in the cell): every optimizer step is a step, the first three in
detail, the profiler's memory bounded, and a `compute_loss` that keeps each
step's logits in a notebook list is a growth finding that names the list.
A tiny BERT built from its config, in a fresh process (transformers' import
is heavy, and it must not see TensorFlow's Keras 3: USE_TF=0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

MiB = 2**20

SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    from IPython.testing.globalipapp import start_ipython
    import memprofile
    from memprofile.capture.host import RssReader, release_free_memory
    ip = start_ipython()
    ip.run_line_magic("load_ext", "memprofile")
    keep = "history.append(outputs.logits.detach().repeat(1, 2048))" if sys.argv[1] == "keep" else "pass"
    ip.run_cell(f"""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64)
    model = BertForSequenceClassification(config)
    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4096
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {{"input_ids": torch.randint(0, 1000, (32,), generator=g), "labels": torch.tensor(i % 2)}}
    history = []
    class KeepTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            outputs = model(**inputs)
            {keep}
            return (outputs.loss, outputs) if return_outputs else outputs.loss
    args = TrainingArguments(output_dir="{tempfile.mkdtemp()}", max_steps=60, per_device_train_batch_size=8,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0)
    # a bare 2-step run first: the lazy imports, threads and allocator pools of a first train() are
    # the process's own, not the profiler's, and they vary with the machine's load
    KeepTrainer(model=model, args=TrainingArguments(**{{**args.to_dict(), "max_steps": 2}}),
                train_dataset=Data()).train()
    history.clear()
    trainer = KeepTrainer(model=model, args=args, train_dataset=Data())
    """)
    release_free_memory()
    reader = RssReader()
    before = reader.read()
    result = ip.run_cell("%%memprofile -q -n hf\\ntrainer.train()\\n")
    p = memprofile.last()
    release_free_memory()
    print(json.dumps({"error": repr(result.error_in_exec) if result.error_in_exec else None, "steps": len(p.steps),
                      "detailed": sum(s.detailed for s in p.steps), "notes": {w.code: w.message for w in p.warnings},
                      "suggestions": [s.id for s in p.suggestions], "after": reader.read() - before,
                      "step_global": int(ip.ev("trainer.state.global_step"))}))
''')


def _run(mode: str) -> dict:
    env = {**os.environ, "USE_TF": "0", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_trainer_cell_is_stepped_bounded_and_its_kept_logits_named():
    r = _run("keep")
    # THEN the run is the bare run's (60 optimizer steps), each a step, the first three in detail
    assert r["error"] is None and r["step_global"] == 60 and (r["steps"], r["detailed"]) == (60, 3), r
    # AND the logits kept per step are a finding that names the list, with its fix
    assert "history gained 60 torch.Tensor" in r["notes"]["step_growth"], r["notes"]
    assert "kept_per_step" in r["suggestions"]
    # AND the resident memory after the cell is the 60 kept logits (7.5 MiB) and little more
    assert r["after"] < 7.5 * MiB + 24 * MiB, r["after"] / MiB


def test_a_trainer_cell_that_keeps_nothing_has_no_growth_finding():
    r = _run("plain")
    assert r["error"] is None and (r["steps"], r["detailed"]) == (60, 3), r
    assert "step_growth" not in r["notes"] and "kept_per_step" not in r["suggestions"], r["notes"]
    assert r["after"] < 24 * MiB, r["after"] / MiB
