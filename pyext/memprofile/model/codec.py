"""Profile <-> plain dicts and JSON, with a readable error for anything else.

Decoding is driven by the dataclasses' type hints, so the model stays the one
place where fields are declared. Unknown keys are ignored (a newer minor writer
may add some); a missing required key, a wrong type or a newer schema_version
raises ProfileFormatError naming the field.

Reading is bounded: a file may hold or inflate to at most MAX_PROFILE_BYTES
(512 MiB) of JSON, and a gzip file to at most MAX_INFLATE_RATIO times its own
size (past the first 64 MiB), so a small "gzip bomb" is refused after reading a
bounded part of it. JSON nested deeper than the decoder's recursion limit
(Python's, 1000 by default; a real profile nests under 10 levels) is refused as
ProfileFormatError. Messages are capped (errors.MAX_MESSAGE_CHARS) and name
where the bad value is. A file is read with a cap on the bytes read (a device
or FIFO is refused before it is opened: files.py), and written atomically.

Every number is checked as it is decoded: finite, within +-MAX_MAGNITUDE
(2**60), and not negative where its name says it is a size, a duration or a
count (NON_NEGATIVE_SUFFIXES, NON_NEGATIVE_NAMES, less SIGNED: a change can
be negative). What relates fields to each other (a timeline's columns of one
length, indices within the lists they index) is checked by model/checks.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

from memprofile.errors import ProfileFormatError, short_repr
from memprofile.files import gunzip, read_bounded, write_atomic
from memprofile.model.profile import SCHEMA_VERSION, Profile
from memprofile.storage import Url, as_target

_GZIP_MAGIC = b"\x1f\x8b"
MAX_PROFILE_BYTES = 512 << 20
MAX_INFLATE_RATIO = 200  # real profiles compress 5-30x; 1000x is zeros, not a profile
_RATIO_FREE_BYTES = 64 << 20
#: No byte count, count or time a profile holds comes near this (an exabyte); past it a number is damage.
MAX_MAGNITUDE = 2**60
#: Fields (and the items of list fields) that are sizes, durations or counts: never below 0.
NON_NEGATIVE_SUFFIXES = ("_bytes", "_s", "calls", "recorded_points")
NON_NEGATIVE_NAMES = frozenset(
    {"bytes", "index", "rank", "local_rank", "world_size", "steps", "added", "length", "hosts", "graph_bytes"}
)
SIGNED = frozenset({"net_bytes", "measured_saving_bytes", "saving_bytes"})  # a change can make things worse


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


def _non_negative(name: str) -> bool:
    return (name.endswith(NON_NEGATIVE_SUFFIXES) or name in NON_NEGATIVE_NAMES) and name not in SIGNED


def _number_in_range(value: int | float, where: str, non_negative: bool) -> None:
    if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:  # also false for NaN
        what = (
            "not a finite number"
            if isinstance(value, float) and not math.isfinite(value)
            else f"{value:.3g}, out of range (at most 2**60 in size)"
        )
        raise ProfileFormatError(f"{where}: {what}")
    if non_negative and value < 0:
        raise ProfileFormatError(f"{where}: {value:,}, but it cannot be negative")


def decode(tp: Any, value: Any, where: str, name: str = "") -> Any:
    """Turn a JSON value into an instance of type `tp`, or say where it is
    wrong. `name`: the field it is (or is an item of), for its range."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return decode(inner[0], value, where, name)
        raise TypeError(f"unsupported union {tp}")  # a model bug, not bad input
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ProfileFormatError(f"{where}: expected one of {list(typing.get_args(tp))}, got {short_repr(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProfileFormatError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        # timelines are long lists of numbers: one check for the list, the walk only to name a bad item
        low = 0 if _non_negative(name) else -MAX_MAGNITUDE
        if (
            item is int
            and all(type(v) is int for v in value)
            and (not value or (low <= min(value) and max(value) <= MAX_MAGNITUDE))
        ):
            return value
        if item is float and all((type(v) is float or type(v) is int) and low <= v <= MAX_MAGNITUDE for v in value):
            return [float(v) for v in value]
        return [decode(item, v, f"{where}[{i}]", name) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileFormatError(f"{where}: expected an object, got {type(value).__name__}")
        key, item = typing.get_args(tp)
        if key is int:  # JSON keys are strings: {"3": ...} -> {3: ...}
            try:
                return {int(k): decode(item, v, f"{where}.{_key_name(k)}") for k, v in value.items()}
            except ValueError:
                raise ProfileFormatError(f"{where}: expected integer keys, got {short_repr(list(value)[:3])}") from None
        return {str(k): decode(item, v, f"{where}.{_key_name(k)}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProfileFormatError(f"{where}: expected an object, got {type(value).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = decode(hints[f.name], value[f.name], f"{where}.{f.name}", f.name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProfileFormatError(f"{where}: missing required field {f.name!r}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileFormatError(f"{where}: expected a number, got {short_repr(value)}")
        _number_in_range(value, where, _non_negative(name))
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileFormatError(f"{where}: expected an integer, got {short_repr(value)}")
        _number_in_range(value, where, _non_negative(name))
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ProfileFormatError(f"{where}: expected {_type_name(tp)}, got {short_repr(value)}")
        return value
    raise TypeError(f"unsupported type {tp!r} at {where}")  # a model bug, not bad input


def _key_name(key: str) -> str:
    return key if len(key) <= 40 else f"{key[:40]}…"


def profile_from_dict(data: Any) -> Profile:
    if not isinstance(data, dict) or "schema_version" not in data or "peak" not in data:
        raise ProfileFormatError(
            "not a memprofile profile: expected a JSON object with 'schema_version' and 'peak' "
            "(files written by Profile.save() or `%memprofile export x.json`)"
        )
    version = data["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProfileFormatError(f"schema_version must be an integer, got {short_repr(version)}")
    if version > SCHEMA_VERSION:
        from memprofile._version import __version__

        raise ProfileFormatError(
            f"this profile has schema version {version}, newer than the {SCHEMA_VERSION} that "
            f"memprofile {__version__} reads: upgrade memprofile (pip install -U memprofile)"
        )
    if version < 1:
        raise ProfileFormatError(f"schema_version {version} is not a valid memprofile schema version")
    from memprofile.model.checks import check_consistent

    if data.get("merged"):  # the ranks of a job, merged: the class that finds their files
        from memprofile.model.merged import MergedProfile

        profile: Profile = decode(MergedProfile, data, "profile")
    else:
        profile = decode(Profile, data, "profile")
    check_consistent(profile)
    return profile


def loads(text: str | bytes) -> Profile:
    if isinstance(text, bytes) and text[:2] == _GZIP_MAGIC:
        text = inflate(text)
    elif len(text) > MAX_PROFILE_BYTES:
        raise ProfileFormatError(
            f"too large for a memprofile profile: {len(text):,} bytes, more than the "
            f"{MAX_PROFILE_BYTES >> 20} MiB limit"
        )
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileFormatError(f"not a memprofile profile: the content is not JSON ({exc})") from None
    except RecursionError:
        raise ProfileFormatError("not a memprofile profile: its JSON is nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise ProfileFormatError(f"not a memprofile profile: {exc}") from None
    return profile_from_dict(data)


def inflate_limit(compressed_size: int) -> int:
    """The most a gzip file of `compressed_size` bytes may inflate to."""
    return min(MAX_PROFILE_BYTES, max(_RATIO_FREE_BYTES, MAX_INFLATE_RATIO * compressed_size))


def inflate(data: bytes) -> bytes:
    """Decompress gzip `data`, refusing it as soon as it passes inflate_limit:
    a bomb costs only the limit."""
    size = len(data)
    limit = inflate_limit(size)
    try:
        return gunzip(data, limit)
    except ProfileFormatError as exc:
        tail = (
            f" (the limit for a {size:,}-byte file); a profile that large is not one memprofile wrote"
            if "inflates" in str(exc)
            else ""
        )
        raise ProfileFormatError(f"not a memprofile profile: {exc}{tail}") from None


def save(profile: Profile, path: str | Path | Url) -> Path | Url:
    """Write `profile` as JSON (gzip where the name ends in .gz), all or
    nothing: a full disk leaves no partial file and an old file intact.
    `path` may be an fsspec URL (s3://bucket/key.json.gz; storage.py)."""
    path = as_target(path)
    text = dumps(profile).encode()
    return write_atomic(path, gzip.compress(text) if path.suffix == ".gz" else text)


def load(path: str | Path | Url, storage_options: dict | None = None) -> Profile:
    """Read a profile written by `Profile.save` (plain or gzip JSON) from a
    path or any fsspec URL (s3://, gs://, abfs://, file://; `storage_options`:
    the store's options, e.g. {"endpoint_url": ...}, {"anon": True})."""
    path = as_target(path, storage_options)
    raw = read_bounded(path, MAX_PROFILE_BYTES, "profile")
    try:
        return loads(raw)
    except ProfileFormatError as exc:
        raise ProfileFormatError(f"{path}: {exc}") from None
