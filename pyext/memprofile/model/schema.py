"""JSON Schema of the Profile and ProfileSummary records and of the panel's
comm messages (model/wire.py), generated from the dataclasses.

The generated file `profile.schema.json` ships in the package; the TypeScript
types in labextension/ are generated from it (jlpm build:types), and tests
check that neither is stale. One file, so that the messages' references to
ProfileSummary and Suggestion resolve to the same generated types. Regenerate with:

    python -m memprofile.model.schema --write
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from memprofile.model import wire
from memprofile.model.profile import SCHEMA_VERSION, Profile
from memprofile.model.summary import ProfileSummary

SCHEMA_PATH = Path(__file__).with_name("profile.schema.json")

# Non-negative by construction: a negative byte count or duration is a bug.
_NON_NEGATIVE_SUFFIXES = ("_bytes", "_s", "calls", "recorded_points")
_SIGNED = {"net_bytes", "measured_saving_bytes", "saving_bytes"}  # a change can make things worse


def _field_schema(tp: Any, name: str, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:  # opaque data (a bokeh json_item)
        return {}
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        (only,) = inner
        return {"anyOf": [_field_schema(only, name, defs), {"type": "null"}]}
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(tp))}
    if origin is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _field_schema(item, name, defs)}
    if origin is dict:
        _, item = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _field_schema(item, name, defs)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _define(tp, defs)
        return {"$ref": f"#/definitions/{tp.__name__}"}
    if tp is int:
        schema: dict[str, Any] = {"type": "integer"}
    elif tp is float:
        schema = {"type": "number"}
    elif tp is str:
        return {"type": "string"}
    elif tp is bool:
        return {"type": "boolean"}
    else:
        raise TypeError(f"no schema for {tp!r}")
    if name.endswith(_NON_NEGATIVE_SUFFIXES) and name not in _SIGNED:
        schema["minimum"] = 0
    return schema


def _is_tag(tp: Any) -> bool:
    """A one-value Literal: a message's `type`, always sent although it has a default."""
    return typing.get_origin(tp) is Literal and len(typing.get_args(tp)) == 1


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {}
    required = []
    for f in dataclasses.fields(cls):
        props[f.name] = _field_schema(hints[f.name], f.name, defs)
        if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) or _is_tag(hints[f.name]):
            required.append(f.name)
    schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(cls.__name__ + "("):  # skip dataclass' generated signature
        schema["description"] = " ".join(doc.split())
    schema |= {"properties": props, "required": required, "additionalProperties": True}
    return schema


def _define(cls: type, defs: dict[str, Any]) -> None:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}  # placeholder first: breaks recursion
        defs[cls.__name__] = _object_schema(cls, defs)


def _union(alias: Any, description: str, defs: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "anyOf": [_field_schema(cls, "", defs) for cls in typing.get_args(alias)]}


def _wire_definitions(defs: dict[str, Any]) -> None:
    """The comm's messages, their unions, and which reply answers which request."""
    payloads: tuple[type, ...] = (wire.PanelProfile, wire.PanelComparison, wire.HelloMessage)
    for payload in payloads:
        _define(payload, defs)
    defs["KernelPush"] = _union(wire.Push, "What the kernel pushes without being asked.", defs)
    defs["PanelRequest"] = _union(wire.Request, "What the panel asks (a reply echoes its request_id).", defs)
    defs["KernelReply"] = _union(wire.Reply, "What the kernel answers a request with.", defs)
    defs["ReplyTo"] = {
        "type": "object",
        "title": "ReplyTo",
        "description": "Not a message: the reply that answers each request type (an ErrorReply otherwise).",
        "properties": {kind: _field_schema(reply, "", defs) for kind, (_, reply) in wire.REPLIES.items()},
        "required": list(wire.REPLIES),
        "additionalProperties": False,
    }


def build_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _object_schema(Profile, defs)
    _define(ProfileSummary, defs)
    _wire_definitions(defs)
    root["properties"]["schema_version"] = {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION}
    root["required"] = ["schema_version", *root["required"]]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": f"https://memprofile.dev/schema/profile.v{SCHEMA_VERSION}.json",
        **root,
        "definitions": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
        return 0
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
