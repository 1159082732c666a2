"""The trainer code writers (analysis/rules/trainers.py) on the shapes a cell takes, without a
framework running: a Profile with its trainer record and the cell's source.

GIVEN a cell that trains through a framework trainer, in one of its shapes
WHEN a rule writes the trainer's switch
THEN the code is the cell with the keywords set in its own call (layout kept), an arguments
variable rebound, the trainer rebuilt from its parts, or where the setting goes (no variable).
"""

from __future__ import annotations

import ast

from memprofile.analysis.rules import trainers
from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Profile, TrainerInfo


def _facts(source: str) -> Facts:
    return Facts(Profile(id="t", name="t", started_at="2026-01-01T00:00:00Z", duration_s=1.0, source=source))


HF = TrainerInfo(
    framework="transformers",
    type="Trainer",
    module="transformers.trainer",
    variable="trainer",
    args_variable="args",
    args_type="TrainingArguments",
    model_variable="model",
    model_type="BertForSequenceClassification",
)


def test_a_cell_that_builds_its_arguments_gets_them_edited_in_place_with_its_layout():
    cell = (
        "%%memprofile\n"
        "args = TrainingArguments(\n"
        '    output_dir="out",  # where\n'
        "    per_device_train_batch_size=32,\n"
        ")\n"
        "trainer = Trainer(model=model, args=args)\n"
        "trainer.train()\n"
    )
    code = trainers.hf_code(_facts(cell), HF, {"per_device_train_batch_size": "16", "bf16": "True"}, "what")
    body = code.split("TrainingArguments:\n", 1)[1]
    assert body.startswith("args = TrainingArguments(\n")  # the cell's code, without its %%memprofile line
    assert '    output_dir="out",  # where\n    per_device_train_batch_size=16, bf16=True,\n)' in body, body
    assert body.rstrip().endswith("trainer.train()")


def test_a_cell_that_builds_the_trainer_from_arguments_made_elsewhere_rebinds_them():
    code = trainers.hf_code(
        _facts("trainer = Trainer(model=model, args=args)\ntrainer.train()\n"), HF, {"bf16": "True"}, "w"
    )
    assert code.endswith("args = dataclasses.replace(args, bf16=True)"), code
    ast.parse(code)


def test_a_cell_that_only_trains_rebuilds_the_trainer_from_its_parts():
    code = trainers.hf_code(_facts("trainer.train()\n"), HF, {"optim": '"adafactor"'}, "w")
    assert "trainer = type(trainer)(" in code and 'args=dataclasses.replace(trainer.args, optim="adafactor")' in code
    # what the user gave the Trainer and it keeps goes to the new one: the loss, metrics, the
    # optimizer class, the user's own callbacks (a reviewer found them dropped: another training)
    for part in ("compute_loss_func", "preprocess_logits_for_metrics", "optimizer_cls_and_kwargs", "callbacks"):
        assert f"    {part}=trainer." in code or f"    {part}=[c for c in trainer." in code, part
    ast.parse(code)


def test_a_trainer_no_variable_holds_gets_where_the_setting_goes():
    info = TrainerInfo(framework="transformers", type="SFTTrainer", args_type="SFTConfig")
    code = trainers.hf_code(_facts("train_it()\n"), info, {"bf16": "True"}, "w")
    assert code.splitlines()[-1] == "# SFTConfig(..., bf16=True)"


LIGHTNING = TrainerInfo(
    framework="lightning", type="Trainer", package="lightning", variable="trainer", model_variable="model"
)


def test_lightning_the_trainer_call_and_a_positional_loader_batch_are_edited():
    cell = (
        "loader = DataLoader(data, 256, shuffle=True)\ntrainer = L.Trainer(max_steps=3)\ntrainer.fit(model, loader)\n"
    )
    code = trainers.lightning_code(_facts(cell), LIGHTNING, {"accumulate_grad_batches": "2"}, "w", loader_batch=128)
    assert "loader = DataLoader(data, 128, shuffle=True)" in code
    assert "trainer = L.Trainer(max_steps=3, accumulate_grad_batches=2)" in code
    assert "batch_size=128" not in code  # said only where the loader is not in the cell


def test_lightning_a_trainer_built_elsewhere_gets_the_constructor_to_write():
    code = trainers.lightning_code(_facts("trainer.fit(model)\n"), LIGHTNING, {"precision": '"bf16-mixed"'}, "w", 64)
    assert 'trainer = L.Trainer(..., precision="bf16-mixed")' in code and "batch_size=64" in code
    pl = TrainerInfo(framework="lightning", type="Trainer", package="pytorch_lightning")
    assert "import pytorch_lightning as pl" in trainers.lightning_code(
        _facts("x.fit(m)\n"), pl, {"precision": "16"}, "w"
    )


def test_an_empty_call_gets_its_first_keyword():
    tree = ast.parse("TrainingArguments()")
    call = tree.body[0].value  # type: ignore[attr-defined]
    assert trainers.edit_call("TrainingArguments()", call, {"bf16": "True"}) == "TrainingArguments(bf16=True)"


def test_keras_fit_on_arrays_gets_batch_size_and_fit_on_a_dataset_gets_the_pipelines_batch():
    from memprofile.analysis.rules import batch_size

    arrays = _facts("model.fit(x, y, batch_size=256, verbose=0)\n")
    arrays.framework = "tensorflow"
    assert "model.fit(x, y, batch_size=128, verbose=0)" in batch_size._code(arrays, 256, 128, 2)
    dataset = _facts("model.fit(train_ds, epochs=1)\n")
    dataset.framework = "tensorflow"
    code = batch_size._code(dataset, 256, 128, 2)
    assert ".batch(128)" in code and "batch_size=" not in code, code  # Keras refuses batch_size with a dataset


def test_lightning_optimizer_code_takes_every_shape_configure_optimizers_returns():
    # GIVEN configure_optimizers returning an optimizer, a dict with a scheduler, a list, or
    # ([optimizers], [schedulers]) (a reviewer found the code raising AttributeError on the dict)
    import torch

    from memprofile.analysis.rules import optimizer_state

    weight = torch.nn.Parameter(torch.ones(2))
    flag = ["for group in opt.param_groups:", '    group["foreach"] = False']
    swap = ["opt = torch.optim.SGD([dict(g) for g in opt.param_groups], momentum=0.9)"]
    for body, replaces in ((flag, False), (swap, True)):
        code = optimizer_state._lightning_override(_facts("trainer.fit(model)\n"), LIGHTNING, body, "w", replaces)
        for shape in ("optimizer", "dict", "list", "lists"):
            adam = torch.optim.Adam([weight])
            scheduler = torch.optim.lr_scheduler.StepLR(adam, 1)
            given = {
                "optimizer": adam,
                "dict": {"optimizer": adam, "lr_scheduler": scheduler},
                "list": [adam],
                "lists": ([adam], [scheduler]),
            }[shape]

            class Module(torch.nn.Module):
                def configure_optimizers(self, given=given):
                    return given

            # WHEN the code runs and Lightning calls configure_optimizers
            namespace = {"torch": torch, "model": Module()}
            exec(code, namespace)
            out = namespace["model"].configure_optimizers()
            # THEN it returns the same shape, with the optimizer changed in place or swapped in
            container = torch.optim.Optimizer if shape == "optimizer" else type(given)
            assert isinstance(out, container), (shape, code)
            got = (
                out["optimizer"]
                if shape == "dict"
                else out[0][0]
                if shape == "lists"
                else out[0]
                if shape == "list"
                else out
            )
            if replaces:
                assert isinstance(got, torch.optim.SGD) and got.param_groups[0]["params"] == [weight], shape
            else:
                assert got is adam and adam.param_groups[0]["foreach"] is False, shape


def test_a_cell_that_binds_its_arguments_variable_gets_them_changed_before_the_trainer():
    # GIVEN a cell that binds `args` itself (not by a TrainingArguments call) and builds the trainer
    cell = (
        "%%memprofile\n"
        "args = make_args(base)\n"
        "for attempt in range(1):\n"
        "    trainer = Trainer(\n"
        "        model=model, args=args)\n"
        "    trainer.train()\n"
    )
    # WHEN a rule writes the change
    code = trainers.hf_code(_facts(cell), HF, {"bf16": "True"}, "w")
    # THEN the cell is given with the rebinding after its own and before the Trainer, indented as it
    # (run before the cell, `args = make_args(base)` would undo it)
    body = code.split("Trainer:\n", 1)[1]
    assert body.startswith("import dataclasses\n\nargs = make_args(base)\n"), body
    assert "    args = dataclasses.replace(args, bf16=True)\n    trainer = Trainer(\n" in body, body
    assert body.rstrip().endswith("trainer.train()")
    ast.parse(body)
