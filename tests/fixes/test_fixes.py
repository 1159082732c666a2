"""Each suggestion's own code, applied to notebooks no rule was developed on,
saves what the suggestion claims (within 25 %), and each rule stays quiet
where it has nothing to say.

The code, placement and estimate come from the rule at run time; see
harness.py for how a fix is applied and measured, workloads.py for the
notebooks and what each rule is expected to do on them.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from memprofile.analysis.rules import RULES  # noqa: E402
from tests.fixes import harness  # noqa: E402
from tests.fixes.workloads import WORKLOADS  # noqa: E402

#: Rules that speak only near a device's limit or on a GPU: nothing to measure
#: on this CPU; on these workloads (far below the machine's memory) they must be quiet.
DEVICE_LIMIT_RULES = ("tf_memory_growth", "fragmentation", "headroom", "batch_size")
MEASURED_RULES = [r for r in RULES if r not in DEVICE_LIMIT_RULES]

CLAIMS = [
    pytest.param(w, r, id=f"{w.name}-{r}")
    for w in WORKLOADS
    for r in MEASURED_RULES
    if w.expect.get(r, "either") != "quiet"
]
QUIET = [
    pytest.param(w, r, id=f"{w.name}-{r}")
    for w in WORKLOADS
    for r in RULES
    if w.expect.get(r) == "quiet" or r in DEVICE_LIMIT_RULES
]


@pytest.fixture
def notebook(ip, fresh_store, tmp_path, monkeypatch):
    """The shell, working in a directory of the test's own (stream_dataset's fix writes files)."""
    monkeypatch.chdir(tmp_path)
    yield ip
    harness.fresh(ip)


@pytest.mark.parametrize(("workload", "rule"), CLAIMS)
def test_the_fix_saves_what_the_suggestion_claims(notebook, workload, rule):
    m = harness.measure(notebook, workload, rule)
    if workload.expect.get(rule) == "fires":
        assert m.fired, f"{rule} did not fire on {workload.name} ({workload.label})"
    if not m.fired:
        return  # "either": the rule made no claim here
    assert m.failed is None, m.describe()
    assert m.estimate, f"{rule} on {workload.name} fired without an estimate"
    assert m.within_bar, m.describe()


@pytest.mark.parametrize(("workload", "rule"), QUIET)
def test_the_rule_stays_quiet(notebook, workload, rule):
    p = harness.before(notebook, workload)
    s = harness.suggestion_of(p, rule)
    assert s is None, (
        f"{rule} fired on {workload.name} ({workload.label}): {s.title}; {s.evidence}; "
        f"estimate {s.estimated_saving_bytes} B"
    )


# -- the harness itself ----------------------------------------------------------
def test_the_mode_is_read_from_the_code():
    from memprofile.model.profile import Suggestion

    cell = "opt.zero_grad(set_to_none=False)\nloss = model(x).sum()\nloss.backward()\nopt.step()\n"

    def mode(code, placement="below"):
        return harness.mode_of(Suggestion("r", "t", "e", code, placement=placement), cell, {}, "r")

    wrapped = "import torch\n\nwith torch.autocast('cpu'):\n" + "".join(f"    {line}\n" for line in cell.splitlines())
    assert mode(wrapped) == "replaces"
    assert mode("# free them\nopt.zero_grad(set_to_none=True)  # before the forward") == "edits"
    assert (
        harness.edited_cell("opt.zero_grad(set_to_none=True)", cell).splitlines()[0]
        == "opt.zero_grad(set_to_none=True)"
    )
    assert mode("optimizer.zero_grad(set_to_none=True)") == "below"  # a callee the cell does not call
    assert mode("import functools\nmodel.layer.forward = functools.partial(f, model.layer.forward)") == "below"
    assert mode("import os\nos.environ['X'] = '1'", placement="top") == "top"


def test_a_fix_that_raises_is_reported_not_measured(notebook):
    from tests.fixes.workloads import COMMON, Workload

    # a rule whose code names a variable this notebook lacks: measured as failed
    w = Workload(
        "tiny", "tiny", COMMON + "w = torch.zeros(1 << 20, requires_grad=True)\n", "(w * 2).sum().backward()\n"
    )
    p = harness.before(notebook, w)
    assert p.peak_device.name == "cpu"
    with pytest.raises(harness.CellFailed, match="NameError"):
        harness.run(notebook, "undefined_optimizer.zero_grad()")


def test_freed_bytes_are_read_from_the_allocator(notebook):
    from tests.fixes.workloads import COMMON, Workload

    # 8 MiB bound by the cell, 4 MiB of it freed by `del`: exactly what the allocator frees
    w = Workload("bound", "bound", COMMON, "a = torch.ones(1 << 21)\nb = torch.ones(1 << 20)\n")
    device, freed = harness.freed_by(notebook, w, "del a")
    assert (device, freed) == ("cpu", 8 << 20)
    device, freed = harness.freed_by(notebook, w, "c = b.clone()")
    assert freed == -(4 << 20)
