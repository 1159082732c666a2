"""What a `@profiled` call and a block in a function keep for the what-if engine to run them
again (whatif/call.py): nothing alive, one spec per tensor, configs copied, too-large values
refused with the reason; the argument binding for every kind of parameter. Real torch."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import types
import weakref

import pytest

torch = pytest.importorskip("torch")

from memprofile.whatif.call import ARG, CALLEE, Gone, Rerun, TensorSpec, call_rerun  # noqa: E402


def _values(rerun: Rerun | str) -> dict:
    assert isinstance(rerun, Rerun), rerun
    return rerun.bindings.resolve()


def test_every_kind_of_parameter_binds_as_called():
    def f(a, /, b, c=3, *rest, d, e=5, **more):
        return a, b, c, rest, d, e, more

    rerun = call_rerun(f, (1, 2), {"d": 4, "z": 9})
    ns = {**_values(rerun)}
    assert eval(rerun.source, ns) == f(1, 2, d=4, z=9)
    rerun = call_rerun(f, (1, 2, 30, 40, 50), {"d": 4, "e": 6})
    assert eval(rerun.source, {**_values(rerun)}) == f(1, 2, 30, 40, 50, d=4, e=6)


def test_a_tensor_is_its_spec_once_and_the_call_keeps_nothing_alive():
    model = torch.nn.Linear(8, 8)
    x = torch.randn(16, 8)

    def f(m, a, b):
        return m(a) + m(b)

    rerun = call_rerun(f, (model, x, x), {})
    values = _values(rerun)
    assert isinstance(values[ARG + "a"], TensorSpec) and values[ARG + "a"] is values[ARG + "b"]
    assert values[ARG + "a"].shape == (16, 8) and values[CALLEE] is f
    gone_x, gone_model = weakref.ref(x), weakref.ref(model)
    del x, model, values
    gc.collect()
    assert gone_x() is None and gone_model() is None
    with pytest.raises(Gone, match="the argument `m` no longer exists"):
        rerun.bindings.resolve()


def _identity(value):
    return value


def test_a_leaf_that_learns_is_held_itself_not_as_a_spec():
    w = torch.zeros(4, requires_grad=True)
    values = _values(call_rerun(_identity, (w,), {}))
    assert values[ARG + "value"] is w


@dataclasses.dataclass
class Config:
    steps: int = 2
    losses: list = dataclasses.field(default_factory=list)


@pytest.mark.parametrize(
    "config", [Config(), argparse.Namespace(steps=2, losses=[]), types.SimpleNamespace(steps=2, losses=[])]
)
def test_a_config_of_plain_values_is_a_copy_of_its_own(config):
    values = _values(call_rerun(_identity, (config,), {}))
    held = values[ARG + "value"]
    held.losses.append(1.0)  # what a re-run would do
    assert held is not config and config.losses == [] and held.steps == 2


def test_values_too_large_to_hold_are_refused_with_the_reason():
    assert "100,000 items: too many" in call_rerun(_identity, (list(range(100_000)),), {})
    assert "characters long" in call_rerun(_identity, ("x" * 200_000,), {})
    assert "is a generator" in call_rerun(_identity, ((i for i in range(3)),), {})


def test_a_function_wrapped_by_another_module_s_decorator_is_refused():
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            return fn(*a, **k)

        return inner

    wrapped = deco(lambda: 1)
    wrapped.__wrapped__ = types.FunctionType((lambda: 2).__code__, {"__name__": "elsewhere"})
    assert "wrapped by a decorator of another module" in call_rerun(wrapped, (), {})


def test_an_argument_that_raises_when_looked_at_never_breaks_the_call(monkeypatch):
    # GIVEN a decorated function (in a notebook) whose arguments' inspection raises
    import memprofile

    monkeypatch.setattr(memprofile, "_in_ipython", lambda: True)
    monkeypatch.setattr("memprofile.whatif.call.call_rerun", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))

    @memprofile.profiled(name="awkward", store=False, torch=False, tensorflow=False)
    def f(x):
        return 7

    # THEN the call returns what it returns, and the profile says why it cannot run again
    assert f(object()) == 7
    assert "could not be kept for a re-run (RuntimeError: boom)" in f.profile._no_rerun
