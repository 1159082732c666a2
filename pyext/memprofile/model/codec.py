"""Profile <-> plain dicts and JSON, with a readable error for anything else.

Decoding is driven by the dataclasses' type hints, so the model stays the one
place where fields are declared. Unknown keys are ignored (a newer minor writer
may add some); a missing required key, a wrong type or a newer schema_version
raises ProfileFormatError naming the field.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import types
import typing
import zlib
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

from memprofile.errors import ProfileFormatError
from memprofile.model.profile import SCHEMA_VERSION, Profile

_GZIP_MAGIC = b"\x1f\x8b"


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON-ready values (field order kept)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"cannot serialise non-finite float {obj!r}")
    return obj


def dumps(profile: Profile, indent: int | None = None) -> str:
    separators = (",", ":") if indent is None else None
    return json.dumps(to_dict(profile), indent=indent, separators=separators, allow_nan=False)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def decode(tp: Any, value: Any, where: str) -> Any:
    """Turn a JSON value into an instance of type `tp`, or say where it is wrong."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return decode(inner[0], value, where)
        raise TypeError(f"unsupported union {tp}")  # a model bug, not bad input
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ProfileFormatError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProfileFormatError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileFormatError(f"{where}: expected an object, got {type(value).__name__}")
        key, item = typing.get_args(tp)
        if key is int:  # JSON keys are strings: {"3": ...} -> {3: ...}
            try:
                return {int(k): decode(item, v, f"{where}.{k}") for k, v in value.items()}
            except ValueError:
                raise ProfileFormatError(f"{where}: expected integer keys, got {list(value)[:3]!r}") from None
        return {str(k): decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProfileFormatError(f"{where}: expected an object, got {type(value).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = decode(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProfileFormatError(f"{where}: missing required field {f.name!r}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileFormatError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileFormatError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ProfileFormatError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported type {tp!r} at {where}")  # a model bug, not bad input


def profile_from_dict(data: Any) -> Profile:
    if not isinstance(data, dict) or "schema_version" not in data or "peak" not in data:
        raise ProfileFormatError(
            "not a memprofile profile: expected a JSON object with 'schema_version' and 'peak' "
            "(files written by Profile.save() or `%memprofile export x.json`)"
        )
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProfileFormatError(f"schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        from memprofile import __version__

        raise ProfileFormatError(
            f"this profile has schema version {version}, newer than the {SCHEMA_VERSION} that "
            f"memprofile {__version__} reads: upgrade memprofile (pip install -U memprofile)"
        )
    if version < 1:
        raise ProfileFormatError(f"schema_version {version} is not a valid memprofile schema version")
    return decode(Profile, data, "profile")


def loads(text: str | bytes) -> Profile:
    if isinstance(text, bytes) and text[:2] == _GZIP_MAGIC:
        try:
            text = gzip.decompress(text)
        except (OSError, EOFError, zlib.error) as exc:
            raise ProfileFormatError(f"not a memprofile profile: corrupt gzip data ({exc})") from None
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileFormatError(f"not a memprofile profile: the content is not JSON ({exc})") from None
    return profile_from_dict(data)


def save(profile: Profile, path: str | Path) -> Path:
    path = Path(path)
    text = dumps(profile).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def load(path: str | Path) -> Profile:
    """Read a profile written by `Profile.save` (plain or gzip JSON)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileFormatError(f"cannot read profile {str(path)!r}: {exc.strerror or exc}") from None
    try:
        return loads(raw)
    except ProfileFormatError as exc:
        raise ProfileFormatError(f"{path}: {exc}") from None
