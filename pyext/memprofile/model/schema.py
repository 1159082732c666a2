"""JSON Schema of the Profile and ProfileSummary records, generated from the dataclasses.

The generated file `profile.schema.json` ships in the package; the TypeScript
types in labextension/ are generated from it (jlpm build:types), and tests
check that neither is stale. Regenerate with:

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

from memprofile.model.profile import SCHEMA_VERSION, Profile
from memprofile.model.summary import ProfileSummary

SCHEMA_PATH = Path(__file__).with_name("profile.schema.json")

# Non-negative by construction: a negative byte count or duration is a bug.
_NON_NEGATIVE_SUFFIXES = ("_bytes", "_s", "calls", "recorded_points")
_SIGNED = {"net_bytes", "measured_saving_bytes"}  # a change can make things worse


def _field_schema(tp: Any, name: str, defs: dict[str, Any]) -> dict[str, Any]:
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
    if dataclasses.is_dataclass(tp):
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


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {}
    required = []
    for f in dataclasses.fields(cls):
        props[f.name] = _field_schema(hints[f.name], f.name, defs)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
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


def build_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _object_schema(Profile, defs)
    _define(ProfileSummary, defs)
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
