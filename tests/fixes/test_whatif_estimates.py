"""Estimates that are measurements: each suggestion's own code, re-executed on fake tensors with
the cell, against what that code saves when applied for real (tests/fixes/harness.py)."""

from __future__ import annotations

import pytest

from tests.fixes import harness
from tests.fixes import workloads as W
from tests.fixes.workloads_unseen import AUDIO_EVAL, BERT_IN_CELL, CNN_LOOP

pytest.importorskip("torch")

#: The issue's bar for an estimate against its code's measured saving.
BAR = 0.10


@pytest.fixture(scope="module")
def ip():
    return harness.shell()


@pytest.mark.parametrize(
    ("workload", "rule"),
    [
        (W.LM_TRAIN, "amp"),
        (W.LM_TRAIN, "gradient_checkpointing"),
        (W.CNN_EVAL, "amp"),
        (W.CNN_TRAIN, "gradient_checkpointing"),
        (W.BUILT_IN_CELL, "amp"),
        (BERT_IN_CELL, "gradient_checkpointing"),
        # the BERT fine-tune: amp claimed 1.6-2.4x what its code saves (SDPA's outputs
        # counted as halved); the fake run takes autocast's real dtypes
        (BERT_IN_CELL, "amp"),
        (W.LM_EVAL, "amp"),
        (W.LM_EVAL, "inference_mode"),
        (W.AUTOENCODER, "optimizer_state"),
        # CPU convolutions hold copies of their input and output inside the call: the fake run
        # counts them from the measured run (whatif/workspaces.py); cnn_eval's was +19 % without
        (W.CNN_EVAL, "inference_mode"),
        (AUDIO_EVAL, "inference_mode"),
        # ... per layer: a small CNN's backward holds 3.0x its largest block in one layer, 2.0x in the
        # next; with the family's median amp's estimate was -36 % of what its code saves
        (CNN_LOOP, "amp"),
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_an_estimate_made_by_fake_execution_is_what_its_code_saves(ip, workload, rule):
    m = harness.measure(ip, workload, rule)
    assert m.fired and m.failed is None, m.describe()
    s = next(x for x in harness.before(ip, workload).suggestions if x.id == m.id)
    assert s.estimate_method == "fake execution" and "fake tensors" in s.evidence
    assert abs(m.measured - m.estimate) <= BAR * m.measured, m.describe()


def test_where_the_fake_run_is_not_the_measured_one_the_rules_replay_stays_and_says_why(ip):
    # an LSTM on the CPU: its kernel's workspace is memory a fake run does not see
    p = harness.before(ip, W.LSTM_TRAIN)
    assert p.suggestions and all(s.estimate_method == "replay" for s in p.suggestions)
    note = next(w for w in p.warnings if w.code == "whatif_failed")
    assert "fake tensors" in note.message and "does not see" in note.message


def test_no_whatif_keeps_the_rules_estimates(ip):
    harness.warm(ip, W.LM_TRAIN.setup, W.LM_TRAIN.cell)
    harness.run(ip, "%%memprofile -q -n plain --no-whatif\n" + W.LM_TRAIN.cell)
    import memprofile

    p = memprofile.last()
    assert p.suggestions and all(s.estimate_method == "replay" for s in p.suggestions)
    assert "whatif_s" not in p.capture


def test_past_its_time_budget_the_rest_keep_their_replays(ip):
    # GIVEN a budget no fake run fits in (the default is 5 s; the tests set more)
    from memprofile.whatif.estimate import estimate_suggestions

    # (its own profile, in its own namespace: the module's shell runs other workloads between)
    harness.warm(ip, W.LM_TRAIN.setup, W.LM_TRAIN.cell)
    p = harness.profile(ip, W.LM_TRAIN.cell, "lm_train (budget)")
    p.suggestions = [harness.suggestion_of(p, rule) for rule in ("amp", "gradient_checkpointing")]
    for s in p.suggestions:
        s.estimate_method = None
    p.__dict__.pop("_fake_bases", None)
    estimate_suggestions(p, budget_s=0.0)
    # THEN every suggestion stays, with the rule's replay, and a note says why
    assert [s.id for s in p.suggestions] == ["amp", "gradient_checkpointing"]
    assert all(s.estimate_method != "fake execution" for s in p.suggestions)
    assert any(w.code == "whatif_budget" for w in p.warnings)
