"""The comm's messages and the panel's payloads against the shipped JSON Schema
(model/wire.py's dataclasses, the source of labextension/schema.ts's types):
what the kernel really sends validates, so Python cannot drift from the types
the panel is compiled with."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest

import memprofile
from memprofile.model import wire
from memprofile.model.codec import to_dict
from memprofile.model.schema import SCHEMA_PATH
from memprofile.model.wire import GetProfileRequest, parse_request
from tests.builders import make_lined_profile, make_rich_profile

SCHEMA = json.loads(SCHEMA_PATH.read_text())
DEFINITIONS = SCHEMA["definitions"]
#: Each request type's reply, as the generated ReplyTo says (the panel's `request()` returns these).
REPLY_TO = {kind: ref["$ref"].rsplit("/", 1)[1] for kind, ref in DEFINITIONS["ReplyTo"]["properties"].items()}


def validate(data: object, definition: str) -> None:
    jsonschema.validate(data, {**SCHEMA, "$ref": f"#/definitions/{definition}"})


def with_suggestions(profile):
    """The builders' profiles have none: one that goes at the top, one tried and measured worse."""
    from memprofile.model.profile import Suggestion

    profile.suggestions = [
        Suggestion(
            "tf_memory_growth", "Memory growth", "evidence", "tf.config...", placement="top", restart_kernel=True
        ),
        Suggestion(
            "gradient_checkpointing",
            "Checkpoint",
            "evidence",
            "checkpoint(...)",
            estimated_saving_bytes=2**20,
            measured_saving_bytes=-(2**20),
            can_try=True,
            try_change="checkpoint=encoder",
            measured_time_change=0.1,
            measured_peak_before_bytes=2**30,
        ),
    ]
    return profile


def test_every_wire_dataclass_and_union_is_in_the_schema():
    classes = [v for v in vars(wire).values() if dataclasses.is_dataclass(v) and v.__module__ == wire.__name__]
    assert len(classes) >= 15  # the messages and payloads were found
    missing = [c.__name__ for c in classes if c.__name__ not in DEFINITIONS]
    assert not missing, f"run `python -m memprofile.model.schema --write` and `jlpm build:types`: {missing}"
    kinds = {"sync", "get_profile", "compare", "export", "try", "predict", "bokehjs", "live"}
    assert set(REPLY_TO) == set(wire.REPLIES) == kinds
    for union in ("KernelPush", "PanelRequest", "KernelReply"):
        assert DEFINITIONS[union]["anyOf"]


@pytest.mark.parametrize("make", [make_rich_profile, make_lined_profile])
def test_the_panel_payload_validates(make):
    from memprofile.render.panel import panel_payload

    payload = json.loads(json.dumps(panel_payload(with_suggestions(make()))))
    validate(payload, "PanelProfile")
    assert payload["suggestions"] and all("saving_text" in s and "how" in s for s in payload["suggestions"])
    bad = {**payload, "suggestions": [{**payload["suggestions"][0], "how": None}]}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "PanelProfile")


def test_a_real_comparison_validates_with_a_negative_saving():
    from memprofile.render.panel import comparison_payload

    a, b = make_rich_profile(name="before"), make_rich_profile(name="after")
    b.device("cpu").peak_bytes += 2**30  # b needs more: the saving is negative, and valid
    payload = comparison_payload(memprofile.compare(a, b))
    assert payload["saving_bytes"] < 0 and payload["notes"]  # the builders' runs created state
    validate(payload, "PanelComparison")
    with pytest.raises(jsonschema.ValidationError):
        validate({**payload, "peak": {"name": "cpu"}}, "PanelComparison")


def test_a_message_without_its_type_is_invalid():
    cleared = to_dict(wire.ClearedMessage())
    validate(cleared, "KernelPush")
    for bad in ({}, {"type": "added"}, {"type": "sideways"}):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "KernelPush")


def test_requests_round_trip_and_a_bad_one_names_its_field():
    request = GetProfileRequest(id="abc", request_id="r1")
    data = to_dict(request)
    validate(data, "PanelRequest")
    assert parse_request(data) == request
    with pytest.raises(memprofile.errors.ProfileFormatError, match=r"get_profile request: missing required field 'id'"):
        parse_request({"type": "get_profile"})
    with pytest.raises(ValueError, match="unknown request 'frobnicate'"):
        parse_request({"type": "frobnicate"})


# -- the messages a real comm sends ---------------------------------------------------------------------------------


@pytest.fixture
def comm_sent(monkeypatch):
    """The comm package's Comm with the kernel's iopub replaced by a list:
    (msg_type, data) as the panel would receive them."""
    import comm
    from comm.base_comm import BaseComm

    sent: list[tuple[str, dict]] = []

    class RecordingComm(BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            sent.append((msg_type, json.loads(json.dumps(data))))  # as JSON, the way it travels

    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    return sent


@pytest.fixture
def panel(comm_sent):
    from memprofile.jupyter.comm import PanelComm
    from memprofile.store import ProfileStore

    p = PanelComm(ProfileStore())
    p.open()
    yield p
    p.close()


def ask(panel, sent: list, data: dict) -> dict:
    """Send a request the way JupyterLab does; the reply the kernel sent back."""
    before = len(sent)
    panel._comm.handle_msg({"content": {"data": {**data, "request_id": "r-test"}}})
    *pushed, (kind, reply) = sent[before:]  # a trial's runs push their profiles first
    assert kind == "comm_msg" and reply["request_id"] == "r-test"
    for _, push in pushed:
        validate(push, "KernelPush")
    validate(reply, "KernelReply")
    validate(reply, REPLY_TO[data["type"]] if reply["type"] != "error" else "ErrorReply")
    return reply


def test_every_message_of_a_real_comm_validates(panel, comm_sent, tmp_path):
    ((kind, hello),) = comm_sent
    assert kind == "comm_open"
    validate(hello, "HelloMessage")
    a, b = with_suggestions(make_rich_profile(name="a")), make_lined_profile(name="b")
    b.id = "fedcba9876543210" * 2  # the builders give every profile the same id
    panel.store.add(a)
    panel.store.add(b)
    pushed = [data for _, data in comm_sent[1:]]
    assert [m["type"] for m in pushed] == ["added", "added"]
    for m in pushed:
        validate(m, "KernelPush")
    assert [s["name"] for s in ask(panel, comm_sent, {"type": "sync"})["items"]] == ["a", "b"]
    assert ask(panel, comm_sent, {"type": "get_profile", "id": b.id})["lines"]
    assert ask(panel, comm_sent, {"type": "compare", "a": a.id, "b": b.id})["a_name"] == "a"
    exported = ask(panel, comm_sent, {"type": "export", "id": a.id, "path": str(tmp_path / "a.html")})
    assert exported["path"] == str(tmp_path / "a.html")
    assert len(ask(panel, comm_sent, {"type": "bokehjs"})["scripts"]) == 3
    # failures are replies too
    assert ask(panel, comm_sent, {"type": "get_profile", "id": "nope"})["type"] == "error"
    assert "missing required field 'b'" in ask(panel, comm_sent, {"type": "compare", "a": a.id})["message"]
    assert "unknown request" in ask(panel, comm_sent, {"type": "frobnicate"})["message"]
    panel.store.clear()
    validate(comm_sent[-1][1], "KernelPush")
    assert comm_sent[-1][1] == {"type": "cleared"}


def test_the_reply_to_try_validates(ip, fresh_store, comm_sent):
    pytest.importorskip("torch")
    from memprofile.jupyter.comm import PanelComm

    ip.run_cell(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "wire_net = nn.Sequential(*[nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), "
        "nn.Linear(1024, 256)) for _ in range(3)])\nwire_xs = torch.randn(2048, 256)"
    )
    ip.run_cell("%%memprofile -q --name wire\nwire_net(wire_xs).square().mean().backward()")
    panel = PanelComm(fresh_store)
    panel.open()
    try:
        profile = fresh_store.last()
        tried = ask(panel, comm_sent, {"type": "try", "id": profile.id, "suggestion": "gradient_checkpointing"})
    finally:
        panel.close()
        ip.run_cell("del wire_net, wire_xs")
    assert tried["type"] == "tried" and tried["suggestion"] == "gradient_checkpointing"
    assert [p.name for p in fresh_store.all()] == ["wire", "wire (as is)", "wire (--try checkpoint=0,1,2)"]
    validate({**tried, "saving_bytes": -1}, "TriedReply")  # a change can make it worse
