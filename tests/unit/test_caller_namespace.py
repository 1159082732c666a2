"""profiler.caller_namespace: the one way memprofile.profile(), Profiler,
try_change() and run_trial() find the caller's objects. Called from a
function, each sees what the profiled block binds in that function by its
end (the namespace is read live, not copied at the start)."""

from __future__ import annotations

import pytest

import memprofile
from memprofile.profiler import Profiler, caller_namespace

np = pytest.importorskip("numpy")
OFF = {"torch": False, "tensorflow": False, "store": False}


def _kept_names(profile) -> set[str]:
    return {k.name for k in profile.kept}


def _asks():
    return caller_namespace()


def test_at_module_level_it_is_the_globals_in_a_function_its_locals_over_them_and_a_given_one_as_is():
    module = {"_asks": _asks}
    exec("namespace = _asks()", module)
    assert module["namespace"] is module  # the live dict itself
    given = {"x": 1}
    assert caller_namespace(given) is given
    outer = "shadowed"
    namespace = _asks()
    later = "bound after"
    assert namespace["later"] == later and namespace["outer"] == outer  # read live
    assert namespace["np"] is np  # the globals under the locals


def test_profile_and_profiler_see_what_the_block_binds():
    def block(**options):
        with memprofile.profile(name="block", **OFF, **options) as p:
            big_array = np.ones(2**21)  # 16 MiB
        return p, big_array

    assert "big_array" in _kept_names(block()[0])
    assert "big_array" in _kept_names(block(namespace=None)[0])  # None: the caller's, as when left out

    def direct():
        with Profiler(name="direct", **OFF) as p:
            direct_array = np.ones(2**21)
        return p, direct_array

    assert "direct_array" in _kept_names(direct()[0])


def test_a_trial_sees_what_the_run_binds_in_the_callers_function():
    torch = pytest.importorskip("torch")
    from memprofile.trial import run_trial

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    held = None

    def run():
        nonlocal held
        held = model(torch.randn(8192, 64))  # 2 MiB, and the graph behind it

    trial = run_trial(run, "inference_mode", name="t", store=False)
    assert held is not None and "held" in _kept_names(trial.before)
