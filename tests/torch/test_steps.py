"""Long training loops: the first steps in detail, the rest by their
boundaries; the profiler's own memory under its budget; per-step findings.
Cells run in a real IPython shell, as users run them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from memprofile.capture.host import RssReader  # noqa: E402
from tests.cells import run_cell as _run  # noqa: E402

MiB = 2**20

SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
torch.set_num_threads(1)

class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.gru, self.head = nn.Embedding(1000, 64), nn.GRU(64, 128, batch_first=True), nn.Linear(128, 12)

    def forward(self, words):
        return self.head(self.gru(self.emb(words))[0])

tagger = Tagger()
sgd = torch.optim.SGD(tagger.parameters(), lr=0.1, momentum=0.9)
words = torch.randint(0, 1000, (16, 40))
tags = torch.randint(0, 12, (16, 40))
"""
STEP = """\
    sgd.zero_grad()
    loss = torch.nn.functional.cross_entropy(tagger(words).flatten(0, 1), tags.flatten())
    loss.backward()
    sgd.step()
"""


def test_the_first_steps_in_detail_and_every_step_counted(ip, fresh_store):
    # GIVEN a GRU tagger trained for 30 steps (the loss outside the modules)
    _run(ip, SETUP)
    cell = "for step in range(30):\n" + STEP
    _run(ip, cell)  # warm: the momentum buffers exist, as in any later cell
    full = _run(ip, "%%memprofile -q --detail-steps all -n full\n" + cell)
    cheap = _run(ip, "%%memprofile -q -n cheap\n" + cell)
    # THEN every step is there, the first three recorded in detail, and the profile says so
    assert len(cheap.steps) == 30 and [s.index for s in cheap.steps if s.detailed] == [1, 2, 3]
    assert all(s.detailed for s in full.steps) and len(full.steps) == 30
    note = next(w.message for w in cheap.warnings if w.code == "detail_steps")
    assert "steps 1-3 of 30 recorded in detail" in note and "steps 4-30" in note
    # AND the steps' peak is the fully detailed capture's: the steps are alike (step 1 also
    # frees what the previous run left in the cell's variables, which differs between runs)
    assert max(s.peak_bytes for s in cheap.steps[1:3]) == pytest.approx(
        max(s.peak_bytes for s in full.steps[1:]), rel=0.02
    )
    # AND each detailed step has its exact peak, every step its resident memory
    assert all(s.peak_bytes and s.end_bytes for s in cheap.steps[:3])
    assert all(s.rss_peak_bytes for s in cheap.steps)
    # AND the profile's size does not grow with the steps it did not detail
    assert cheap.timeline("cpu").recorded_points < full.timeline("cpu").recorded_points / 5


def test_a_later_step_above_the_detailed_ones_is_named(ip, fresh_store):
    # GIVEN a loop whose step 12 runs a batch 64 times larger
    _run(ip, SETUP)
    _run(ip, "big_words = torch.randint(0, 1000, (1024, 40))\nbig_tags = torch.randint(0, 12, (1024, 40))")
    cell = "for step in range(16):\n    w, t = (big_words, big_tags) if step == 11 else (words, tags)\n" + STEP.replace(
        "tagger(words)", "tagger(w)"
    ).replace("tags.flatten()", "t.flatten()")
    p = _run(ip, "%%memprofile -q -n spike\n" + cell)
    # THEN the profile names it, with the option that records it in detail
    note = next(w for w in p.warnings if w.code == "step_above_detail")
    assert note.message.startswith("step 12 peaked above every detailed step")
    assert "--detail-steps 12-12" in note.message
    assert note.fix == "%%memprofile --detail-steps 12-12"
    # AND its fix, run, records step 12 alone in detail: its ops and layers, and the peak of a
    # capture that records every step
    window = _run(ip, note.fix + " -q -n window\n" + cell)
    full = _run(ip, "%%memprofile -q -n all --detail-steps all\n" + cell)
    assert [s.index for s in window.steps if s.detailed] == [12] and len(window.steps) == 16
    assert window.peak_bytes == pytest.approx(full.peak_bytes, rel=0.03)

    def rise(profile):  # over what the kernel held before the cell (other tests' tensors too)
        return profile.device("cpu").peak_bytes - profile.device("cpu").baseline_bytes

    assert rise(window) > 2 * rise(p)
    assert window.peak.layer == full.peak.layer and window.peak.line == full.peak.line
    assert any(w.code == "detail_late" for w in window.warnings)


def test_memory_kept_per_step_is_a_finding_with_the_line_that_keeps_it(ip, fresh_store):
    # GIVEN a loop that keeps each step's output (and its graph) in a list
    _run(ip, SETUP)
    _run(ip, "kept = []")
    cell = (
        "for step in range(14):\n    sgd.zero_grad()\n    out = tagger(words.repeat(8, 1))\n"
        "    kept.append(out)\n    out.sum().backward(retain_graph=True)\n    sgd.step()\n"
    )
    p = _run(ip, "%%memprofile -q -n leak\n" + cell)
    note = next(w.message for w in p.warnings if w.code == "step_growth")
    assert "per step since step 4" in note and "kept gained 14 torch.Tensor" in note  # the first step after the detail
    assert "added at line 4 (kept.append(out))" in note
    # AND the suggestion frees the graphs each kept output still holds
    s = next(s for s in p.suggestions if s.id == "kept_per_step")
    assert s.code.startswith("kept.append(out.detach())") and s.estimated_saving_bytes > 200 * MiB
    # AND a loop that keeps nothing is not flagged
    q = _run(ip, "%%memprofile -q -n steady\nfor step in range(14):\n" + STEP)
    assert not any(w.code == "step_growth" for w in q.warnings)


def test_a_loop_of_millions_of_tiny_ops_stays_under_the_budget(ip, fresh_store):
    # GIVEN a kernel that profiled a transformer's steps in full before (torch's profiler then
    # made a later cell grow ~360 bytes per allocation while its stopped events were kept)
    _run(
        ip,
        "import torch\nfrom torch import nn\nenc = nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, "
        "batch_first=True), 2)\nenc_opt = torch.optim.Adam(enc.parameters())\ntokens = torch.randn(16, 128, 256)",
    )
    _run(
        ip,
        "%%memprofile -q --detail-steps all -n before\nfor _ in range(8):\n    enc_opt.zero_grad()\n"
        "    enc(tokens).square().mean().backward()\n    enc_opt.step()\n",
    )
    # AND a cell making 600,000 small allocations and no training step
    _run(ip, "import torch\nimport ctypes\nctypes.CDLL('libc.so.6').malloc_trim(0)")
    reader = RssReader()
    try:
        before = reader.read()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        p = _run(ip, "%%memprofile -q --budget 512M -n tiny\nfor i in range(600_000):\n    a = torch.empty(64)\n")
        after = reader.read()
    finally:
        reader.close()
    # THEN the profile exists and says where detail ended and why
    assert p.error is None and any(w.code == "budget_reached" for w in p.warnings)
    assert p.capture["torch_detail_why"] == "budget"
    # AND its fix is the magic line with twice the budget
    assert next(w.fix for w in p.warnings if w.code == "budget_reached") == "%%memprofile --budget 1024M"
    # AND the process's high-water mark over the start stays under the budget, and its
    # resident memory comes back (torch's event buffers are released, not kept by glibc)
    host = p.device("host")
    assert host.peak_bytes - before < 512 * MiB
    assert after - before < 100 * MiB
    # AND once the detail ended the process stays flat (the events were read and let go)
    tl = p.timeline("host")
    end = float(p.capture["torch_detail_end_s"]) + 0.3
    rest = [v for t, v in zip(tl.t, tl.live_bytes) if t > end]
    assert rest and max(rest) - rest[0] < 40 * MiB


def test_a_model_with_large_activations_and_few_ops_keeps_its_detail(ip, fresh_store):
    # GIVEN a forward pass that allocates ~400 MB in a few ops (no budget reached by events)
    _run(
        ip,
        "import torch\nfrom torch import nn\nwide = nn.Sequential(nn.Linear(4096, 8192), nn.ReLU(), "
        "nn.Linear(8192, 4096))\nrows = torch.randn(4096, 4096)",
    )
    p = _run(ip, "%%memprofile -q -n wide\nfor _ in range(3):\n    y = wide(rows)\n")
    assert "torch_detail_why" not in p.capture and p.peak_bytes > 300 * MiB


def test_detail_steps_option_is_checked(ip, fresh_store, capsys):
    ip.run_cell("%%memprofile --detail-steps 0\nx = 1")
    ip.run_cell("%%memprofile --budget 1k\nx = 1")
    out = "".join(capsys.readouterr())
    assert "--detail-steps takes N (the first N training steps), A-B" in out and "--budget must be at least 256M" in out


def test_a_window_that_no_step_reaches_says_so(ip, fresh_store):
    _run(ip, SETUP)
    p = _run(ip, "%%memprofile -q -n short --detail-steps 50-60\nfor step in range(4):\n" + STEP)
    assert len(p.steps) == 4 and not any(s.detailed for s in p.steps)
    assert any(
        w.code == "torch_detail_never" and "none in the detail window (steps 50-60)" in w.message for w in p.warnings
    )
    assert all(s.rss_peak_bytes for s in p.steps)


@pytest.mark.serial  # each step must outlast its reading; two loaded cores made CI group steps 8 and 9
def test_a_short_spike_in_a_step_outside_the_detail_is_measured_exactly(ip, fresh_store):
    # GIVEN a loop whose step 8 makes and drops a 256 MiB tensor within a few microseconds
    # (between two of the 5 ms resident-memory samples). Each step lasts over 12 ms: a step
    # shorter than the readings' gap (capture/host.py MAX_FIGURES_GAP_S, 10 ms) may be read
    # with the next one, as steps 7 and 8 were in a CI run ("one of steps 7-8"), and rightly so.
    _run(ip, SETUP)
    cell = (
        "for step in range(12):\n    time.sleep(0.012)\n    if step == 7:\n"
        "        torch.empty(64 * MiB).fill_(1.0)\n" + STEP
    )
    _run(ip, "MiB = 2**20\nimport time")
    p = _run(ip, "%%memprofile -q -n blip\n" + cell)
    # THEN step 8's peak is the process's exact one (the OS high-water mark, reset each step)
    others = [s.rss_peak_bytes for s in p.steps if not (s.rss_peak_first or s.index) <= 8 <= s.index]
    assert p.steps[7].rss_peak_bytes - max(others) > 200 * MiB
    # (all of the tensor: a sample would have to fall in the instant its last page was written)
    assert p.steps[7].rss_peak_bytes >= p.steps[6].rss_end_bytes + 255 * MiB
    assert "read and reset each step" in p.capture["host_peak_from"]
    note = next(w.message for w in p.warnings if w.code == "step_above_detail")
    assert note.startswith("step 8 peaked above every detailed step") and "--detail-steps 8-8" in note
    # AND the run's peak still covers it
    assert p.device("host").peak_bytes >= p.steps[7].rss_peak_bytes


SHORT_STEPS = """
import torch
from torch import nn
torch.manual_seed(1)
torch.set_num_threads(1)
MiB = 2**20
net = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
adam = torch.optim.Adam(net.parameters())
xs, ys = torch.randn(4, 32), torch.randn(4, 4)
"""
SHORT_STEP = """\
    adam.zero_grad()
    torch.nn.functional.mse_loss(net(xs), ys).backward()
    adam.step()
"""


@pytest.mark.serial  # short steps' timing against the readings: no other test loading the cores
def test_steps_shorter_than_their_reading_are_read_in_groups_that_name_a_spike(ip, fresh_store):
    # GIVEN 400 steps of a tiny MLP (well under a millisecond each: reading the OS mark costs
    # a tenth of one), with a 192 MiB tensor made and dropped in step 250 only
    _run(ip, SHORT_STEPS)
    cell = "for step in range(400):\n    if step == 249:\n        torch.empty(48 * MiB).fill_(1.0)\n" + SHORT_STEP
    _run(ip, cell.replace("step == 249", "step < 0"))  # warm: Adam's state exists
    p = _run(ip, "%%memprofile -q -n groups\n" + cell)
    # THEN short steps share readings, and the reading that covers step 250 has all of the tensor
    assert len(p.steps) == 400 and any(s.rss_peak_first for s in p.steps)

    def covers(s) -> bool:
        return (s.rss_peak_first or s.index) <= 250 <= s.index

    group = next(s for s in p.steps if s.index >= 250 and s.rss_peak_first is not None or s.index == 250)
    assert covers(group)
    quiet = [s.rss_peak_bytes for s in p.steps[3:] if s.rss_peak_bytes is not None and not covers(s)]
    assert group.rss_peak_bytes - max(quiet) > 150 * MiB
    note = next(w.message for w in p.warnings if w.code == "step_above_detail")
    first, last = (int(v) for v in note.split("--detail-steps ")[1].split()[0].split("-"))
    assert first <= 250 <= last and last - first < 100
    # AND the option the note names records the spike in detail (the advice, applied and measured)
    again = _run(ip, f"%%memprofile -q -n again --detail-steps {first}-{last}\n" + cell)
    assert [s.index for s in again.steps if s.detailed] == list(range(first, last + 1))
    assert again.peak_bytes >= 192 * MiB
    # the peak's op and line: the spike's
    assert again.peak.line == 3 and any(
        op.name == "aten::empty" and op.max_alloc_bytes >= 192 * MiB for op in again.ops
    )


def test_module_hooks_leave_with_the_detail_and_a_model_run_after_it_still_counts(ip, fresh_store):
    # GIVEN a loop that trains `net` and, after its steps, runs `probe` (a second model) once
    _run(ip, SHORT_STEPS)
    _run(ip, "probe = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 32))\nseen = []")
    hooks = "torch.nn.modules.module._global_forward_pre_hooks, torch.nn.modules.module._global_forward_hooks"
    cell = (
        "for step in range(20):\n"
        + SHORT_STEP
        + f"    seen.append(tuple(len(h) for h in ({hooks})))\n"
        + "with torch.no_grad():\n    out = probe(xs)\n"
    )
    p = _run(ip, "%%memprofile -q -n hooks\n" + cell)
    seen = ip.user_ns["seen"]
    # THEN the detailed steps have torch's scopes (both hooks); after them only the cheap hook
    # that waits for `probe` to run
    assert seen[0] == (1, 1) and seen[-1] == (1, 0)
    # AND `probe`, run only after the detail, is a model of this cell
    assert any(row.name == "probe" for row in p.layers)
    # AND where every model in the namespace has run, no module hook at all after the detail
    # (the Python API with the loop's own namespace: the test shell holds other tests' models)
    from memprofile.profiler import Profiler

    seen.clear()
    only = {name: ip.user_ns[name] for name in ("net", "adam", "xs", "ys", "seen")}
    with Profiler(name="nohooks", store=False, namespace=only):
        exec(cell.split("with torch.no_grad")[0], {"torch": torch, **only})
    assert seen[-1] == (0, 0)
    # AND nothing is left after the profiles
    assert not any(
        len(h)
        for h in (torch.nn.modules.module._global_forward_pre_hooks, torch.nn.modules.module._global_forward_hooks)
    )
