"""The growth finding and its fix on profiles built by hand: which code each
kind of kept value gets (a number, a tensor with its graph, a tuple of
tensors, a dict or a deque of them), and how the namespace scan takes what
a container gained (its tail, without copying it)."""

from __future__ import annotations

import collections

import pytest

from memprofile.analysis.growth import culprits, describe
from memprofile.analysis.rules import suggest
from memprofile.analysis.steps import step_notes
from memprofile.capture.namespace import _added
from memprofile.model.profile import GrownContainer, GrownItem, Profile, StepStat

MiB = 2**20


def _profile(source: str, *grown: GrownContainer, per_step: int = 4 * MiB) -> Profile:
    p = Profile(id="x", name="loop", started_at="2026-12-01T00:00:00Z", duration_s=1.0, source=source)
    p.steps = [
        StepStat(
            index=k + 1,
            t_start=k * 0.1,
            t_end=(k + 1) * 0.1,
            detailed=k < 3,
            peak_bytes=900 * MiB,
            end_bytes=500 * MiB + k * per_step,
            device="cuda:0",
        )
        for k in range(20)
    ]
    p.grown = list(grown)
    p.capture["collectors"] = "torch,namespace"
    return p


def _grown(name="history", items="array", kind="list", shape=(64, 10), device="cpu", graph=0, nbytes=4 * MiB):
    return GrownContainer(
        name=name,
        added=20,
        length=20,
        bytes=20 * nbytes,
        graph_bytes=graph,
        item=GrownItem("torch.Tensor", list(shape), "float32", device, nbytes),
        type=kind,
        items=items,
    )


LOOP = "for x in loader:\n    loss = step(x)\n    {add}\n"


@pytest.mark.parametrize(
    "add, grown, code",
    [
        # a scalar: keep a number
        ("losses.append(loss)", _grown("losses", shape=(), nbytes=4, graph=80 * MiB), "losses.append(loss.item())"),
        # a tensor whose graph still saves activations: drop the graph
        ("history.append(out)", _grown(graph=80 * MiB), "history.append(out.detach())"),
        # on a GPU: off it
        ("history.append(model(x))", _grown(device="cuda:0"), "history.append(model(x).detach().cpu())"),
    ],
)
def test_a_value_added_in_the_cell_gets_its_line_rewritten(add, grown, code):
    p = _profile(LOOP.format(add=add), grown)
    (c,) = culprits(p, None)
    assert c.code.startswith(code + "   # line 3:") and c.line == 3


def test_a_tuple_of_tensors_is_not_given_a_tensor_method_but_the_container_is_cleared():
    g = _grown(items="tuple", graph=80 * MiB)
    p = _profile(LOOP.format(add="history.append((out, out.sum()))"), g)
    (c,) = culprits(p, None)
    assert c.code.startswith("del history[:]") and ".detach()" not in c.code.split("#")[0]
    assert "each tuple's tensors with .detach()" in c.how
    assert "history gained 20 tuples of torch.Tensor" in describe(c)
    assert c.saving_bytes == g.bytes + g.graph_bytes


@pytest.mark.parametrize("kind, code", [("dict", "cache.clear()"), ("deque", "cache.clear()")])
def test_dicts_and_deques_get_their_own_code(kind, code):
    p = _profile("train()\n", _grown("cache", kind=kind))
    (c,) = culprits(p, None)
    assert c.code.startswith(code) and "[:]" not in c.code.split("#")[0]


def test_a_dict_of_scalars_added_outside_the_cell_is_rebuilt_with_numbers():
    p = _profile("train()\n", _grown("metrics", kind="dict", shape=(), nbytes=4, graph=80 * MiB))
    (c,) = culprits(p, None)
    assert c.code.startswith("metrics.update({k: v.item() for k, v in metrics.items()})")


def test_the_note_and_the_suggestion_name_the_container_not_a_tiny_one():
    p = _profile(
        LOOP.format(add="losses.append(loss)\n    history.append(out)"), _grown(), _grown("losses", shape=(), nbytes=4)
    )
    note = next(n.message for n in step_notes(p) if n.code == "step_growth")
    assert "history gained 20 torch.Tensor" in note and "losses gained" not in note
    s = next(s for s in suggest(p) if s.id == "kept_per_step")
    assert "history" in s.title and s.estimated_saving_bytes == 80 * MiB


def test_the_gained_tail_is_taken_without_copying_the_container():
    big = list(range(2_000_000))
    assert _added(big, 1_999_998, 10) == [1_999_998, 1_999_999]
    assert _added(collections.deque(range(10)), 7, 10) == [7, 8, 9]
    assert _added({k: k * 2 for k in range(10)}, 8, 10) == [16, 18]
    assert _added([1, 2, 3], 0, 2) == [2, 3]  # at most `most`, the newest
    assert _added([1, 2], 5, 10) == []  # shrank


def test_the_users_own_modules_are_read_for_the_frameworks_they_import(tmp_path, monkeypatch):
    from memprofile.profiler import local_import_sources

    (tmp_path / "helpers_for_memprofile_test.py").write_text("import torch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = local_import_sources("import os, json\nfrom helpers_for_memprofile_test import step\n")
    assert found == ["import torch\n"]  # not os or json (the standard library), not imported
    assert local_import_sources("this is not python") == []


def test_predictions_an_evaluation_loop_collects_after_training_are_no_growth():
    # GIVEN a cell that trains, then collects each validation batch's predictions (4 MiB each)
    source = (
        "for x, y in train:\n    loss = lossf(model(x), y)\n    loss.backward()\n    opt.step()\n"
        "for x, y in val:\n    preds.append(model(x))\n"
    )
    p = _profile(source, _grown("preds"), per_step=0)  # the steps' ends do not grow
    # THEN no step keeps it: no growth note, no kept_per_step
    assert not [n for n in step_notes(p) if n.code == "step_growth"]
    assert "kept_per_step" not in [s.id for s in suggest(p)]
    # AND the same list filled inside the training loop is the finding
    q = _profile(
        source.replace("    opt.step()\n", "    opt.step()\n    preds.append(model(x))\n"), _grown("preds"), per_step=0
    )
    assert [n for n in step_notes(q) if n.code == "step_growth"]


def test_objects_that_raise_on_any_look_are_skipped_by_the_container_scan():
    import weakref

    from memprofile.capture.namespace import _containers, scan_grown

    class Gone:
        pass

    class Hostile:
        @property
        def __class__(self):
            raise RuntimeError("no")

        def __getattr__(self, name):
            raise RuntimeError("no")

    class Loop:
        def __init__(self):
            self.history = [1, 2]

    obj = Gone()
    namespace = {"dead": weakref.proxy(obj), "hostile": Hostile(), "loop": Loop(), "kept": [1]}
    del obj  # the proxy is dead: touching it raises ReferenceError
    found = _containers(namespace)
    assert set(found) == {"loop.history", "kept"}
    assert scan_grown(namespace, {}) == []  # no arrays gained: nothing to say, and no error
