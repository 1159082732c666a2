"""Suggestion rules on real PyTorch workloads (CPU): each fires where it should
and stays quiet where it must."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import memprofile  # noqa: E402
from memprofile.analysis.rules import suggest  # noqa: E402
from tests.torch.workloads import Block, training  # noqa: E402

MiB = 2**20


def _profile(fn, namespace):
    with memprofile.profile(name="t", store=False, namespace=namespace) as p:
        fn()
    return p


def _ids(p):
    return {s.id for s in p.suggestions}


def _get(p, rule):
    return next(s for s in p.suggestions if s.id == rule)


def test_amp_and_checkpointing_fire_on_a_residual_stack_in_float32():
    torch.manual_seed(0)
    step, ns = training(nn.Sequential(*[Block() for _ in range(4)]), torch.randn(2048, 256))
    p = _profile(step, ns)
    amp, ckpt = _get(p, "amp"), _get(p, "gradient_checkpointing")
    assert amp.try_change == "amp" and amp.can_try and "float32 outputs of ops autocast runs in 16 bits" in amp.evidence
    assert amp.code.startswith('import torch\n\nwith torch.autocast("cpu", dtype=torch.bfloat16):')
    assert 0 < amp.estimated_saving_bytes < p.peak_bytes
    # the blocks are named and the estimate is a real share of the activations
    assert ckpt.try_change == "checkpoint=0,1,2,3" and "0, 1, 2, 3" in ckpt.title
    assert p.peak.by_category["activation"] * 0.3 < ckpt.estimated_saving_bytes < p.peak_bytes
    assert "model.get_submodule(name)" in ckpt.code


def test_amp_stays_quiet_when_the_step_already_runs_in_bfloat16():
    torch.manual_seed(0)
    step, ns = training(nn.Sequential(*[Block() for _ in range(4)]), torch.randn(2048, 256))

    def in_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    assert "amp" not in _ids(_profile(in_bf16, ns))


def test_checkpointing_stays_quiet_where_each_block_is_one_op():
    # a plain Sequential of Linear/ReLU: each module's activation is its own output,
    # which the next one keeps anyway; checkpointing them saves nothing
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 1))
    step, ns = training(model, torch.randn(2048, 256))
    assert "gradient_checkpointing" not in _ids(_profile(step, ns))


def test_inference_mode_fires_for_a_forward_that_keeps_its_graph_and_not_under_no_grad():
    torch.manual_seed(0)
    model, x, held = nn.Sequential(*[Block() for _ in range(3)]), torch.randn(2048, 256), {}
    ns = {"model": model, "x": x, "held": held}
    p = _profile(lambda: held.update(out=model(x)), ns)
    s = _get(p, "inference_mode")
    assert s.try_change == "inference_mode" and "with torch.inference_mode():" in s.code
    assert s.estimated_saving_bytes >= 0.5 * p.peak.by_category["activation"]
    # AND the output held with its graph is a notebook leak, named by its variable
    leak = _get(p, "notebook_leak")
    assert "held['out']" in leak.evidence and "held['out'] = held['out'].detach()" in leak.code

    def no_grad():
        with torch.no_grad():
            held.update(out=model(x))

    quiet = _profile(no_grad, ns)
    assert not {"inference_mode", "notebook_leak", "amp", "gradient_checkpointing"} & _ids(quiet)
    # training is not forward-only
    step, ns2 = training(model, x)
    assert "inference_mode" not in _ids(_profile(step, ns2))


def test_zero_grad_fires_when_gradients_outlive_the_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024))
    x = torch.randn(512, 1024)
    step, ns = training(model, x, set_to_none=False, optimizer=torch.optim.SGD)
    s = _get(_profile(step, ns), "zero_grad_set_to_none")
    assert "32.0 MiB of gradients from the previous step" in s.evidence and "set_to_none=True" in s.code
    # measured on this workload: the peak falls by 26 MiB with set_to_none=True
    assert 16 * MiB <= s.estimated_saving_bytes <= 32 * MiB
    step, ns = training(model, x, set_to_none=True, optimizer=torch.optim.SGD)
    assert "zero_grad_set_to_none" not in _ids(_profile(step, ns))


def test_optimizer_state_fires_for_adam_on_a_parameter_heavy_model_not_for_plain_sgd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048))
    x = torch.randn(16, 2048)
    step, ns = training(model, x)
    s = _get(_profile(step, ns), "optimizer_state")
    assert "2.0x the 32.0 MiB of parameters" in s.evidence and "torch.optim.SGD(model.parameters()" in s.code
    step, ns = training(model, x, optimizer=torch.optim.SGD)
    assert "optimizer_state" not in _ids(_profile(step, ns))


def test_sdpa_fires_for_hand_written_attention_not_for_the_fused_kernel():
    torch.manual_seed(0)
    q = k = v = torch.randn(4, 8, 512, 64, requires_grad=True)

    def by_hand():
        scores = (q @ k.transpose(-2, -1)) / 8.0
        (scores.softmax(-1) @ v).sum().backward()

    p = _profile(by_hand, {"q": q})
    s = _get(p, "sdpa")
    assert "4x8x512x512" in s.evidence and s.estimated_saving_bytes >= 8 * MiB
    assert "sdpa" not in _ids(_profile(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward(), {"q": q}))


def test_quantize_dynamic_fires_for_cpu_inference_of_linear_layers_only():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048))
    x = torch.randn(8, 2048)

    def infer():
        with torch.inference_mode():
            mlp(x)

    s = _get(_profile(infer, {"mlp": mlp, "x": x}), "quantize_dynamic")
    assert "quantize_dynamic(mlp.eval(), {torch.nn.Linear}" in s.code
    assert s.estimated_saving_bytes == int(0.75 * 2 * (2048 * 2048 + 2048) * 4)
    conv = nn.Sequential(nn.Conv2d(64, 512, 3), nn.ReLU(), nn.Conv2d(512, 512, 3))
    img = torch.randn(1, 64, 32, 32)

    def infer_conv():
        with torch.inference_mode():
            conv(img)

    assert "quantize_dynamic" not in _ids(_profile(infer_conv, {"conv": conv, "img": img}))


def test_stream_dataset_fires_for_a_dataset_held_whole_and_sliced_into_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.randn(65536, 512)  # 128 MiB

    def epoch():
        for i in range(0, 4 * 256, 256):
            opt.zero_grad()
            model(data[i : i + 256]).mean().backward()
            opt.step()

    s = _get(_profile(epoch, {"model": model, "opt": opt, "data": data}), "stream_dataset")
    assert "data (torch.Tensor 65536x512, 128.0 MiB)" in s.evidence and "256 batches" in s.evidence
    assert 'np.load("data.npy", mmap_mode="r")' in s.code
    small = {"model": model, "opt": opt, "data": data[:2048].clone()}
    assert "stream_dataset" not in _ids(_profile(lambda: model(small["data"][:256]).mean().backward(), small))


def test_batch_size_fires_near_the_capacity_and_names_the_accumulation():
    torch.manual_seed(0)
    step, ns = training(nn.Sequential(*[Block() for _ in range(2)]), torch.randn(2048, 256))
    p = _profile(step, ns)
    assert "batch_size" not in _ids(p)  # the machine's memory is far from full
    # GIVEN the same run on a machine whose memory the peak fills to 95 %
    host = p.device("host")
    host.capacity_bytes = int((host.peak_bytes - p.peak_bytes) + p.peak_bytes / 0.95)
    s = next(s for s in suggest(p) if s.id == "batch_size")
    assert s.title.startswith("Use batch") and "accumulation" in s.title and "batch 2048 takes" in s.evidence
    assert "accumulate = " in s.code and s.estimated_saving_bytes > 0


def test_a_failing_rule_becomes_a_note_not_a_crash(monkeypatch):
    from memprofile.analysis.rules import amp

    monkeypatch.setattr(amp, "check", lambda f: 1 / 0)
    step, ns = training(nn.Sequential(*[Block() for _ in range(2)]), torch.randn(512, 256))
    p = _profile(step, ns)
    assert "amp" not in _ids(p)
    assert any(n.code == "rule_failed" and "'amp'" in n.message for n in p.warnings)
