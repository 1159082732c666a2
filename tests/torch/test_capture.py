"""PyTorch capture against real torch on CPU: exact peaks, categories, layers."""

from __future__ import annotations

import gc
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import memprofile  # noqa: E402
from memprofile.capture.torch.cuda import cuda_facts, live_blocks_from_snapshot, requested_bytes  # noqa: E402

MiB = 2**20


def _profile(fn, **options):
    with memprofile.profile(name="t", store=False, namespace=options.pop("namespace", {}), **options) as p:
        fn()
    return p


def test_synthetic_peak_is_exact_to_the_byte():
    # GIVEN allocations and frees whose running maximum is known by construction
    def cell():
        a = torch.empty(10 * MiB, dtype=torch.uint8)
        b = torch.empty(20 * MiB, dtype=torch.uint8)  # 30
        del a  # 20
        c = torch.empty(15 * MiB, dtype=torch.uint8)  # 35: the peak
        del b  # 15
        d = torch.empty(5 * MiB + 64, dtype=torch.uint8)  # 20
        del c, d

    p = _profile(cell)
    cpu = p.device("cpu")
    # THEN the peak over the start is 35 MiB exactly, and everything was freed
    assert cpu.peak_bytes - cpu.baseline_bytes == 35 * MiB
    assert cpu.end_bytes == cpu.baseline_bytes
    assert p.peak_bytes == cpu.peak_bytes and p.peak.device == "cpu"
    assert p.peak.by_category == {"temporary": 35 * MiB}
    assert sorted(t.bytes for t in p.peak.tensors) == [15 * MiB, 20 * MiB]


def test_memory_from_before_the_cell_is_the_baseline_and_its_free_is_seen():
    # GIVEN a tensor created before the run, freed during it
    keep = {"old": torch.empty(8 * MiB, dtype=torch.uint8)}

    def cell():
        keep.pop("old")
        gc.collect()  # under pytest the tensor can sit in a reference cycle until collected
        torch.empty(4 * MiB, dtype=torch.uint8)

    p = _profile(cell, namespace=keep)
    cpu = p.device("cpu")
    assert cpu.baseline_bytes == 8 * MiB and cpu.baseline_by_category == {"other": 8 * MiB}
    assert cpu.peak_bytes == 8 * MiB and cpu.end_bytes == 0  # the 4 MiB came after the 8 MiB went


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))


def test_adam_training_parameters_gradients_and_optimizer_state():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(64, 512), torch.randint(0, 10, (64,))
    params = sum(p.numel() * p.element_size() for p in model.parameters())

    def step():
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    p = _profile(step, namespace={"model": model, "opt": opt, "x": x, "y": y})
    at_peak = p.peak.by_category
    assert at_peak["parameter"] == params
    assert at_peak["gradient"] == params
    assert abs(at_peak["optimizer_state"] - 2 * params) <= 0.01 * 2 * params
    assert sum(layer.parameter_bytes for layer in p.layers) == params
    assert sum(layer.gradient_bytes for layer in p.layers) == params
    assert abs(sum(layer.optimizer_state_bytes for layer in p.layers) - 2 * params) <= 0.01 * 2 * params
    assert p.device("cpu").baseline_by_category["parameter"] == params  # the model existed before the run
    names = {layer.name for layer in p.layers}
    assert {"model", "0", "2", "4"} <= names
    assert next(layer for layer in p.layers if layer.name == "2").parent == "model"
    assert any(layer.activation_bytes > 0 for layer in p.layers)
    mm = next(o for o in p.ops if o.name == "aten::addmm")
    assert mm.calls == 9 and mm.allocated_bytes > 0 and mm.input_shapes


def test_largest_activation_is_ranked_in_its_named_layer():
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Linear(64, 128),
            wide=nn.Sequential(nn.Linear(128, 8192), nn.Tanh()),  # tanh saves its 256 x 8192 output
            head=nn.Linear(8192, 1),
        )
    )
    x = torch.randn(256, 64)
    p = _profile(lambda: model(x).sum().backward(), namespace={"model": model, "x": x})
    ranked = sorted(p.layers, key=lambda layer: layer.activation_bytes, reverse=True)
    assert ranked[0].name == "wide.1" and ranked[0].type == "Tanh"
    assert ranked[0].activation_bytes >= 256 * 8192 * 4
    assert next(layer for layer in p.layers if layer.name == "wide.1").parent == "wide"


def test_layers_list_only_the_models_the_cell_used():
    # GIVEN two models in the namespace, of which the cell trains one
    used, idle = _mlp(), nn.Sequential(nn.Linear(64, 64), nn.ReLU())
    opt = torch.optim.SGD(used.parameters(), lr=0.1)
    x = torch.randn(32, 512)

    def step():
        used(x).sum().backward()
        opt.step()

    p = _profile(step, namespace={"used": used, "idle": idle, "opt": opt, "x": x})
    names = {layer.name for layer in p.layers}
    # THEN every module of the trained tree is listed (the parameter-free ReLUs too), the idle model is not
    assert names == {"used"} | {str(i) for i in range(5)}
    # AND a cell that only steps the optimizer still lists the model it changed
    p = _profile(opt.step, namespace={"used": used, "idle": idle, "opt": opt})
    assert {layer.name for layer in p.layers} == names
    # AND a cell that runs no model lists no layer
    assert _profile(lambda: torch.ones(1024), namespace={"used": used, "idle": idle}).layers == []


def test_two_models_with_the_same_submodule_names_are_told_apart():
    # GIVEN two models whose children share names ("0", "1"), both run in the cell
    big, small = _mlp(), nn.Sequential(nn.Linear(512, 256), nn.ReLU())
    x = torch.randn(16, 512)
    p = _profile(lambda: (big(x).sum() + small(x).sum()).backward(), namespace={"big": big, "small": small, "x": x})
    by_name = {layer.name: layer for layer in p.layers}
    # THEN the larger model's children keep their own names, the other's carry its root
    assert by_name["0"].parent == "big" and by_name["0"].parameter_bytes == (512 * 1024 + 1024) * 4
    assert by_name["small.0"].parent == "small" and by_name["small.0"].parameter_bytes == (512 * 256 + 256) * 4
    assert by_name["small.0"].forward_bytes >= 16 * 256 * 4


def test_forward_under_no_grad_has_no_activations_or_gradients():
    model = _mlp()
    x = torch.randn(256, 512)

    def infer():
        with torch.no_grad():
            return model(x)

    p = _profile(infer, namespace={"model": model, "x": x})
    assert not p.peak.by_category.get("activation") and not p.peak.by_category.get("gradient")
    assert all(layer.activation_bytes == 0 and layer.gradient_bytes == 0 for layer in p.layers)
    timeline = p.timeline("cpu")
    assert not any(timeline.by_category.get("activation", [])) and not any(timeline.by_category.get("gradient", []))


def test_forward_with_grad_and_no_backward_keeps_activations():
    model = _mlp()
    x = torch.randn(256, 512)
    holder = {}
    p = _profile(lambda: holder.update(out=model(x)), namespace={"model": model, "x": x})
    # the graph still holds both ReLU outputs (saved for a backward that never came)
    assert p.timeline("cpu").by_category["activation"][-1] >= (256 * 1024 + 256 * 512) * 4


def test_inputs_are_the_root_modules_tensor_arguments():
    model = _mlp()

    def cell():
        batch = torch.randn(128, 512)
        model(batch).sum().backward()

    p = _profile(cell, namespace={"model": model})
    assert max(p.timeline("cpu").by_category["input"]) == 128 * 512 * 4


def test_timeline_categories_add_up_and_carry_op_and_layer():
    model = _mlp()
    x = torch.randn(64, 512)
    p = _profile(lambda: model(x).sum().backward(), namespace={"model": model, "x": x})
    tl = p.timeline("cpu")
    for k in range(len(tl.t)):
        assert sum(col[k] for col in tl.by_category.values()) == tl.live_bytes[k]
    assert tl.t == sorted(tl.t) and tl.t[0] == 0.0
    labels = {tl.labels[i] for i in tl.layer if i >= 0}
    assert {"0", "2"} <= labels
    assert any(tl.labels[i].startswith("aten::") for i in tl.op if i >= 0)
    assert max(tl.live_bytes) == p.device("cpu").peak_bytes


def test_cpu_out_of_memory_keeps_the_profile_and_names_op_layer_and_bytes():
    class Greedy(nn.Module):
        def forward(self, x):
            return x.new_empty(2**60)

    model = nn.Sequential(OrderedDict(pre=nn.Linear(8, 8), greedy=Greedy()))
    with pytest.raises(RuntimeError, match="allocate"):
        with memprofile.profile(name="oom", store=False, namespace={"model": model}) as p:
            model(torch.randn(2, 8))
    assert p.error.type == "RuntimeError"
    assert p.error.requested_bytes == 2**60 * 4
    assert p.error.layer == "greedy" and p.error.op in ("aten::new_empty", "aten::empty")
    assert p.device("cpu").peak_bytes > 0


def test_no_torch_state_is_left_behind():
    import torch.nn.modules.module as hooks
    import torch.optim.optimizer as optim

    model = _mlp()
    _profile(lambda: model(torch.randn(4, 512)), namespace={"model": model})
    assert not hooks._global_forward_pre_hooks and not hooks._global_forward_hooks
    assert not optim._global_optimizer_pre_hooks and not optim._global_optimizer_post_hooks
    assert not torch.autograd.profiler._is_profiler_enabled


def test_no_shapes_and_no_torch_options():
    model = _mlp()
    x = torch.randn(4, 512)
    p = _profile(lambda: model(x), namespace={"model": model, "x": x}, record_shapes=False)
    assert p.ops and not any(o.input_shapes for o in p.ops)
    p = _profile(lambda: model(x), namespace={"model": model, "x": x}, torch=False)
    assert [d.name for d in p.devices] == ["host"]


def test_profile_round_trips_through_json():
    model = _mlp()
    x = torch.randn(16, 512)
    p = _profile(lambda: model(x).sum().backward(), namespace={"model": model, "x": x})
    assert memprofile.Profile.from_json(p.to_json()) == p


# -- CUDA paths, on recorded shapes of the documented API (no GPU here) -------


def test_requested_bytes_reads_cpu_and_cuda_messages():
    assert requested_bytes("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4096 bytes.") == 4096
    cuda = "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total capacity; ...)"
    assert requested_bytes(cuda) == 20 * MiB
    assert requested_bytes("something else") is None


def test_cuda_facts_from_a_memory_stats_dict():
    stats = {
        "allocated_bytes.all.current": 6 * 2**30,
        "allocated_bytes.all.peak": 9 * 2**30,
        "reserved_bytes.all.current": 10 * 2**30,
        "reserved_bytes.all.peak": 12 * 2**30,
        "inactive_split_bytes.all.current": 3 * 2**30,
        "num_alloc_retries": 2,
        "num_ooms": 1,
    }
    facts = cuda_facts(stats, capacity_bytes=80 * 2**30)
    assert facts["fragmentation_permille"] == 400
    assert facts["alloc_retries"] == 2 and facts["ooms"] == 1 and facts["capacity_bytes"] == 80 * 2**30
    assert cuda_facts({})["fragmentation_permille"] == 0


def test_live_blocks_from_a_memory_snapshot():
    snapshot = {
        "segments": [
            {
                "device": 0,
                "blocks": [
                    {
                        "size": 2 * MiB,
                        "state": "active_allocated",
                        "frames": [{"filename": "model.py", "line": 12, "name": "forward"}],
                    },
                    {"size": 8 * MiB, "state": "inactive", "frames": []},
                    {"size": 4 * MiB, "state": "active_allocated", "frames": []},
                ],
            }
        ]
    }
    blocks = live_blocks_from_snapshot(snapshot)
    assert [b["bytes"] for b in blocks] == [4 * MiB, 2 * MiB]
    assert blocks[1]["stack"] == ["model.py:12 forward"] and blocks[0]["device"] == "cuda:0"


def test_cuda_allocator_stats_land_on_their_device():
    from memprofile.analysis.build import build_profile
    from memprofile.analysis.replay import replay
    from memprofile.capture.base import AllocationLog, RawCapture

    log = AllocationLog(device="cuda:0", source="c10", capacity_bytes=80 * 2**30, baseline_exact=True)
    log.add(2 * MiB, 0.0, -1, pre_existing=True)
    i = log.add(6 * MiB, 0.1, 1, category="activation", layer="enc", op="aten::mm", phase="forward")
    log.t_free[i], log.seq_free[i] = 0.2, 2
    facts = {
        f"cuda:0.{k}": v
        for k, v in cuda_facts({"reserved_bytes.all.current": 10 * MiB, "allocated_bytes.all.current": 2 * MiB}).items()
    }
    facts["cuda_live_block.0"] = "cuda:0 2097152 B at model.py:3 f"
    raw = RawCapture(collector="torch", allocations=[log], facts=facts)
    p = build_profile([raw], name="fake", started_at="t", duration_s=0.3, replays=[replay(log)])
    cuda = p.device("cuda:0")
    assert cuda.peak_bytes == 8 * MiB and cuda.baseline_bytes == 2 * MiB and cuda.capacity_bytes == 80 * 2**30
    assert cuda.allocator_stats["fragmentation_permille"] == 800 and cuda.allocator_stats["reserved_bytes"] == 10 * MiB
    assert p.capture["cuda_live_block.0"].startswith("cuda:0 2097152 B")
    assert p.capture["cuda:0_baseline"] == "the allocator's own counters"


def test_a_cell_that_imports_torch_itself_is_profiled():
    import subprocess
    import sys

    cell = "import torch\nx = torch.ones(1000)"
    code = (
        "import sys\nfrom memprofile.profiler import Profiler\n"
        f"p = Profiler(source={cell!r}, namespace={{}}, store=False)\n"
        "assert 'torch' not in sys.modules\np.start()\n"
        f"exec({cell!r})\n"
        "prof = p.stop()\nprint(sorted(d.name for d in prof.devices), prof.device('cpu').peak_bytes)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "['cpu', 'host'] 4000"


def test_torch_prints_no_unknown_block_warning_above_the_card(tmp_path):
    # GIVEN a fresh process where a tensor made before the profile is freed inside it
    # (torch logs "Memory block of unknown size..." at the first such free)
    import subprocess
    import sys

    script = tmp_path / "free_inside.py"
    script.write_text(
        "import torch\nfrom memprofile.profiler import Profiler\n"
        "x = torch.randn(1000)\np = Profiler(name='t', store=False, namespace={})\np.start()\n"
        "del x\ny = torch.randn(10)\np.stop()\nprint('done')\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    # THEN the run works and torch's line is not on the process's stderr
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    assert "Memory block of unknown size" not in out.stderr
