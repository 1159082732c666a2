"""Try it: the cell as is and changed, both profiled, the change undone after."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import memprofile  # noqa: E402
from memprofile.errors import MemprofileError  # noqa: E402
from memprofile.trial import parse_change  # noqa: E402
from tests.torch.workloads import Block, training  # noqa: E402

MiB = 2**20


@pytest.fixture
def workload():
    torch.manual_seed(0)
    return training(nn.Sequential(*[Block() for _ in range(4)]), torch.randn(2048, 256))


def test_amp_trial_measures_the_saving_and_leaves_autocast_off(workload):
    step, ns = workload
    trial = memprofile.try_change(step, "amp", name="train", namespace=ns, store=False)
    assert trial.saving_bytes > 8 * MiB and trial.after.capture["tried"] == "amp"
    assert trial.before.name == "train (as is)" and trial.after.name == "train (--try amp)"
    amp = next(s for s in trial.before.suggestions if s.id == "amp")
    assert amp.measured_saving_bytes == trial.saving_bytes and amp.measured_time_change is not None
    # the changed run really ran in bfloat16, and nothing of it is left
    assert any(t.dtype == "bfloat16" for t in trial.after.peak.tensors)
    assert not torch.is_autocast_enabled("cpu")
    assert "peak -" in repr(trial.comparison)


def test_checkpoint_trial_wraps_the_named_blocks_for_the_run_only(workload):
    step, ns = workload
    trial = memprofile.try_change(step, "checkpoint=0,1,2,3", namespace=ns, store=False)
    assert trial.saving_bytes > 8 * MiB
    assert trial.after.peak.by_category["activation"] < trial.before.peak.by_category["activation"]
    assert all("forward" not in block.__dict__ for block in ns["model"])
    # without names: the blocks of the largest Sequential/ModuleList
    assert memprofile.try_change(step, "checkpoint", namespace=ns, store=False).saving_bytes > 8 * MiB
    assert all("forward" not in block.__dict__ for block in ns["model"])


def test_inference_mode_trial_on_a_forward_that_keeps_its_output(workload):
    _, ns = workload
    held = {}
    trial = memprofile.try_change(lambda: held.update(out=ns["model"](ns["x"])), "inference_mode",
                                  namespace={**ns, "held": held}, store=False)
    assert trial.saving_bytes >= 0.5 * trial.before.peak.by_category["activation"]
    assert not torch.is_inference_mode_enabled() and held["out"].is_inference()


def test_bad_changes_fail_before_anything_runs(workload):
    step, ns = workload
    ran = []
    for change, message in (("bogus", "can be tried are amp, inference_mode, checkpoint"),
                            ("amp=x", "amp takes no layer names"),
                            ("checkpoint=nope", "no module 'nope'")):
        with pytest.raises(MemprofileError, match=message):
            memprofile.try_change(lambda: ran.append(1), change, namespace=ns, store=False)
    assert not ran
    assert parse_change("checkpoint=a, b") == ("checkpoint", ["a", "b"])


def test_a_changed_run_that_raises_keeps_its_profile_and_undoes_the_change(workload, fresh_store):
    step, ns = workload
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second run fails")
        step()

    with pytest.raises(RuntimeError, match="second run fails"):
        memprofile.try_change(flaky, "checkpoint=0,1", namespace=ns)
    failed = fresh_store.last()
    assert failed.name.endswith("(--try checkpoint=0,1)") and failed.error.type == "RuntimeError"
    assert all("forward" not in block.__dict__ for block in ns["model"])




def test_try_magic_runs_twice_and_shows_the_measured_difference(ip, fresh_store, capsys, monkeypatch):
    shown = []
    monkeypatch.setattr(ip.display_pub, "publish", lambda data, metadata=None, **kw: shown.append(data))
    ip.run_cell("import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
                "net = nn.Sequential(*[nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)) "
                "for _ in range(3)])\nxs = torch.randn(2048, 256)\nruns = 0")
    result = ip.run_cell("%%memprofile --try checkpoint --name ck\nruns += 1\nnet(xs).square().mean().backward()\nruns")
    assert result.success, result.error_in_exec
    assert ip.user_ns["runs"] == 2 and result.result == 2  # ran twice; the value is the last run's
    before, after = fresh_store.all()[-2:]
    assert before.name == "ck (as is)" and after.capture["tried"] == "checkpoint"
    assert "its effects happen twice" in capsys.readouterr().out
    html = next(d["text/html"] for d in shown if "memprofile-compare" in d.get("text/html", ""))
    assert "ck (as is) → ck (--try checkpoint)" in html and "peak -" in html
    # the before profile's suggestion now carries the measurement
    ckpt = next(s for s in before.suggestions if s.id == "gradient_checkpointing")
    assert ckpt.measured_saving_bytes == before.peak_bytes - after.device(before.peak_device.name).peak_bytes


def test_try_magic_with_a_bad_change_prints_usage_and_runs_nothing(ip, fresh_store, capsys):
    ip.run_cell("runs = 0")
    ip.run_cell("%%memprofile --try sideways\nruns += 1")
    out = "".join(capsys.readouterr())
    assert "cannot try 'sideways'" in out and "--try CHANGE" in out
    assert ip.user_ns["runs"] == 0 and len(fresh_store) == 0


def test_output_cache_and_kept_graphs_are_named_as_notebook_leaks(ip, fresh_store):
    ip.run_cell("%%memprofile -q --name leak\nbig = torch.ones(8 * 2**20)\nbig * 2", store_history=True)
    leak = next(s for s in fresh_store.last().suggestions if s.id == "notebook_leak")
    assert "output cache holds 32.0 MiB (Out[" in leak.evidence and "%reset -f out" in leak.code
    kept = {k.name: k for k in fresh_store.last().kept}
    assert kept["big"].via == "variable" and kept["big"].new and kept["big"].bytes == 32 * 2**20
    ip.run_cell("%reset -f out", store_history=True)
    ip.run_cell("%%memprofile -q --name clean\nsmall = big.sum()", store_history=True)
    clean = fresh_store.last()
    assert "notebook_leak" not in {s.id for s in clean.suggestions}, (clean.suggestions, clean.kept)


def test_widget_try_it_asks_first_then_measures_in_the_kernel(ip, fresh_store):
    pytest.importorskip("ipywidgets")
    ip.run_cell("import torch\nfrom torch import nn\ntorch.manual_seed(0)\nruns = 0\n"
                "net = nn.Sequential(*[nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), "
                "nn.Linear(1024, 256)) for _ in range(3)])\nxs = torch.randn(2048, 256)")
    ip.run_cell("%%memprofile -q --name w\nruns += 1\nnet(xs).square().mean().backward()")
    profile = fresh_store.last()
    tabs = profile.widget()
    card = next(c for c, s in zip(tabs.children[4].children, profile.suggestions) if s.id == "gradient_checkpointing")
    controls = card.children[-1]
    # a click only asks; nothing runs until the confirmation
    controls.try_button.click()
    assert ip.user_ns["runs"] == 1 and controls.children[1].layout.display == "flex"
    assert "runs the cell twice more" in controls.children[1].children[0].value
    controls.cancel_button.click()
    assert ip.user_ns["runs"] == 1 and controls.children[1].layout.display == "none"
    controls.try_button.click()
    controls.confirm_button.click()
    assert ip.user_ns["runs"] == 3
    assert controls.status.value.startswith("<b>tried:</b> peak -")
    ckpt = next(s for s in profile.suggestions if s.id == "gradient_checkpointing")
    assert ckpt.measured_saving_bytes > 0 and "measured: -" in card.headline.value


def test_large_variables_the_cell_leaves_behind_are_named(ip, fresh_store):
    ip.run_cell("%%memprofile -q --name feats\nfeats = torch.randn(16 * 2**20)\nsmall = torch.ones(10)",
                store_history=True)
    leak = next(s for s in fresh_store.last().suggestions if s.id == "notebook_leak")
    assert "feats (64.0 MiB)" in leak.evidence and "del feats" in leak.code and "small" not in leak.evidence
    # a cell that leaves nothing large behind is not told to free anything
    ip.run_cell("%%memprofile -q --name tidy\ntmp = torch.randn(16 * 2**20).sum()", store_history=True)
    assert "notebook_leak" not in {s.id for s in fresh_store.last().suggestions}
