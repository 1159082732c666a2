"""Try it: the cell as is and changed, both profiled, the change undone after."""

from __future__ import annotations

import re

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
    trial = memprofile.try_change(
        lambda: held.update(out=ns["model"](ns["x"])), "inference_mode", namespace={**ns, "held": held}, store=False
    )
    assert trial.saving_bytes >= 0.5 * trial.before.peak.by_category["activation"]
    assert not torch.is_inference_mode_enabled() and held["out"].is_inference()


def test_bad_changes_fail_before_anything_runs(workload):
    step, ns = workload
    ran = []
    for change, message in (
        ("bogus", "can be tried are amp, inference_mode, checkpoint"),
        ("amp=x", "amp takes no layer names"),
        ("checkpoint=nope", "no module 'nope'"),
    ):
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


def test_try_magic_shows_both_cards_and_the_difference_of_like_runs(ip, fresh_store, capsys, monkeypatch):
    """A GRU tagger whose Adam was made in an earlier cell and never stepped,
    its loss computed outside any module: the first run as is creates the
    optimizer's state and the gradients, so a second, warm run as is is the
    one compared, and both its card and the changed run's are shown."""
    from memprofile.render.bundle import MIME_TYPE

    shown = []
    monkeypatch.setattr(ip.display_pub, "publish", lambda data, metadata=None, **kw: shown.append(data))
    ip.run_cell(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "class Tagger(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb = nn.Embedding(4000, 64)\n"
        "        self.gru = nn.GRU(64, 256, num_layers=2, batch_first=True)\n"
        "        self.head = nn.Linear(256, 4000)\n"
        "    def forward(self, tokens):\n"
        "        return self.head(self.gru(self.emb(tokens))[0])\n"
        "tagger = Tagger()\nadam = torch.optim.Adam(tagger.parameters(), lr=1e-3)\n"
        "tokens = torch.randint(0, 4000, (16, 48))\nruns = 0"
    )
    result = ip.run_cell(
        "%%memprofile --try checkpoint=gru --name tag\nruns += 1\nadam.zero_grad()\n"
        "logits = tagger(tokens)\n"
        "nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()\n"
        "adam.step()\nruns"
    )
    assert result.success, result.error_in_exec
    assert ip.user_ns["runs"] == 3 and result.result == 3  # cold, warm, changed; the value is the last run's
    first, before, after = fresh_store.all()[-3:]
    assert [p.name for p in (first, before, after)] == [
        "tag (as is)",
        "tag (as is, warm)",
        "tag (--try checkpoint=gru)",
    ]
    assert "its effects happen two or three times" in capsys.readouterr().out
    # both cards, then the comparison of the warm run with the changed one
    cards = [d[MIME_TYPE]["id"] for d in shown if MIME_TYPE in d]
    assert cards == [before.id, after.id]
    html = next(d["text/html"] for d in shown if "memprofile-compare" in d.get("text/html", ""))
    assert "tag (as is, warm) → tag (--try checkpoint=gru)" in html
    assert "compared the second, warm run as is" in html and "of optimizer state" in html
    state = sum(p.numel() * 4 for p in ip.user_ns["tagger"].parameters())
    assert after.device("cpu").baseline_by_category["optimizer_state"] >= 2 * state
    assert {w.code for w in first.warnings} >= {"state_created"}
    # the measurement is on the compared run's suggestion, against its own peak
    ckpt = next((s for s in before.suggestions if s.id == "gradient_checkpointing"), None)
    if ckpt is not None:
        assert ckpt.measured_saving_bytes == before.peak_bytes - after.device(before.peak_device.name).peak_bytes


def _fresh_cnn():
    """A small CNN whose Adam exists but has never stepped; its loss is
    computed outside the model."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(
            *[nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()) for _ in range(4)]
        ),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 4096),
        nn.ReLU(),
        nn.Linear(4096, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(images), labels).backward()
        opt.step()

    return step, {"net": net, "opt": opt, "images": images, "labels": labels}


def test_a_run_that_creates_optimizer_state_is_run_again_warm_and_that_run_is_compared():
    step, ns = _fresh_cnn()
    params = sum(p.numel() * p.element_size() for p in ns["net"].parameters())
    trial = memprofile.try_change(step, "checkpoint=2.0,2.1,2.2,2.3", name="cnn", namespace=ns, store=False)
    assert trial.first is not None and trial.first.name == "cnn (as is)"
    assert trial.before.name == "cnn (as is, warm)" and trial.after.name == "cnn (--try checkpoint=2.0,2.1,2.2,2.3)"
    # the first run created Adam's two moments (and the gradients); the compared runs created nothing
    created = trial.created[trial.first.name]
    assert 2 * params <= created["optimizer_state"] < 2 * params + 2**16 and created["gradient"] == params
    assert set(trial.created) == {trial.first.name}
    c = trial.comparison
    kinds = {r.name: r for r in c.categories}
    assert kinds["optimizer_state"].delta == 0 and kinds["optimizer_state"].before >= 2 * params
    assert kinds["parameter"].delta == 0
    assert c.notes[0].startswith("the first run as is created ") and "compared the second, warm run as is" in c.notes[0]
    assert c.duration_before_s == trial.before.duration_s  # the time compared is the warm run's
    assert trial.saving_bytes > 0 and kinds["activation"].delta < 0
    # both as-is profiles carry the measurement, with the peak it was measured against
    for p in (trial.first, trial.before):
        ckpt = next((s for s in p.suggestions if s.id == "gradient_checkpointing"), None)
        if ckpt is not None:
            assert ckpt.measured_saving_bytes == trial.saving_bytes
            assert ckpt.measured_peak_before_bytes == c.peak.before
    # now warm: a second trial runs as is only once
    again = memprofile.try_change(step, "amp", name="cnn", namespace=ns, store=False)
    assert again.first is None and again.created == {} and again.comparison.notes == []


def test_trials_of_a_trial_are_named_after_the_cell_and_apart(workload, fresh_store):
    step, ns = workload
    memprofile.try_change(step, "amp", name="blocks", namespace=ns)
    tried = fresh_store.last()
    memprofile.try_change(step, "amp", name=tried.name, namespace=ns)  # trying from a trial's own profile
    memprofile.try_change(step, "amp", name="blocks (as is)", namespace=ns)
    names = [p.name for p in fresh_store.all()]
    assert names == [
        "blocks (as is)",
        "blocks (--try amp)",
        "blocks #2 (as is)",
        "blocks #2 (--try amp)",
        "blocks #3 (as is)",
        "blocks #3 (--try amp)",
    ]
    assert all(p.capture["trial_of"] == "blocks" for p in fresh_store.all())


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
    ip.run_cell(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\nruns = 0\n"
        "net = nn.Sequential(*[nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), "
        "nn.Linear(1024, 256)) for _ in range(3)])\nxs = torch.randn(2048, 256)"
    )
    ip.run_cell("%%memprofile -q --name w\nruns += 1\nnet(xs).square().mean().backward()")
    profile = fresh_store.last()
    tabs = profile.widget()
    card = next(c for c, s in zip(tabs.children[4].children, profile.suggestions) if s.id == "gradient_checkpointing")
    controls = card.children[-1]
    # a click only asks; nothing runs until the confirmation
    controls.try_button.click()
    assert ip.user_ns["runs"] == 1 and controls.children[1].layout.display == "flex"
    assert "runs the cell two or three more times" in controls.children[1].children[0].value
    assert controls.confirm_button.description == "Run the cell 2 or 3 times"
    controls.cancel_button.click()
    assert ip.user_ns["runs"] == 1 and controls.children[1].layout.display == "none"
    controls.try_button.click()
    controls.confirm_button.click()
    assert ip.user_ns["runs"] == 3
    assert controls.status.value.startswith("<b>tried:</b> peak -")
    ckpt = next(s for s in profile.suggestions if s.id == "gradient_checkpointing")
    assert ckpt.measured_saving_bytes > 0 and "measured: -" in card.headline.value
    # the profiled run made the gradients, the trial's did not: other peaks, and still one percentage
    tried = fresh_store.all()[-2]
    assert tried.name == "w (as is)" and tried.peak_bytes != profile.peak_bytes
    percent = re.compile(r"\(([+-]\d+ %)\)")
    assert percent.findall(controls.status.value) == percent.findall(card.headline.value)[:1]


def test_large_variables_the_cell_leaves_behind_are_named(ip, fresh_store):
    ip.run_cell(
        "%%memprofile -q --name feats\nfeats = torch.randn(16 * 2**20)\nsmall = torch.ones(10)", store_history=True
    )
    leak = next(s for s in fresh_store.last().suggestions if s.id == "notebook_leak")
    assert "feats (64.0 MiB)" in leak.evidence and "del feats" in leak.code and "small" not in leak.evidence
    # a cell that leaves nothing large behind is not told to free anything
    ip.run_cell("%%memprofile -q --name tidy\ntmp = torch.randn(16 * 2**20).sum()", store_history=True)
    assert "notebook_leak" not in {s.id for s in fresh_store.last().suggestions}
