"""Profile steps 1-3 of a Hugging Face Trainer run with memprofile's callback.

    python examples/integrations/huggingface_trainer.py --out profiles/
    torchrun --nproc-per-node 2 examples/integrations/huggingface_trainer.py --out profiles/
    memprofile merge profiles/          # the ranks' profiles, after a torchrun job

A tiny BERT built from its config and random tokens: it runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow where it is installed

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from memprofile.integrations.huggingface import MemprofileCallback


class RandomTokens(torch.utils.data.Dataset):
    """Sequences of random token ids with a label: the same ones on every run."""

    def __init__(self, size: int = 64, length: int = 32, vocab: int = 500) -> None:
        self.size, self.length, self.vocab = size, length, vocab

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"input_ids": torch.randint(0, self.vocab, (self.length,), generator=g), "labels": torch.tensor(i % 2)}


def main(argv: list[str] | None = None) -> Trainer:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder (or .json.gz / .html file) for the profile")
    parser.add_argument("--steps", default="1-3", help="the optimizer steps to profile, e.g. 1-3")
    parser.add_argument("--max-steps", type=int, default=5)
    parser.add_argument("--bare", action="store_true", help="train without the callback")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=500,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    model = BertForSequenceClassification(config)
    training = TrainingArguments(
        output_dir="hf-output",
        max_steps=args.max_steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        use_cpu=True,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,  # under torchrun, on CPUs
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )

    memory = MemprofileCallback(steps=args.steps, out=args.out)
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=RandomTokens(),
        callbacks=[] if args.bare else [memory],
    )
    trainer.train()

    if memory.profile is not None:
        p = memory.profile
        print(f"peak {p.peak_bytes} B; steps {p.capture['steps']}; largest layers: {list(p.peak.by_layer)[:3]}")
    return trainer


if __name__ == "__main__":
    main()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # under torchrun: gloo's threads end before the interpreter does (without it a rank
        # aborted at exit now and then: "terminate called without an active exception")
        dist.destroy_process_group()
