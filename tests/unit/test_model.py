"""The Profile record: JSON round trips, the schema, and readable errors."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memprofile
from memprofile import Profile, ProfileFormatError
from memprofile.model.profile import (
    CATEGORIES,
    Device,
    ErrorInfo,
    Framework,
    LayerStat,
    Note,
    OpStat,
    Peak,
    Suggestion,
    TensorInfo,
    Timeline,
)
from memprofile.model.schema import SCHEMA_PATH, schema_text
from tests.builders import make_profile
from tests.hypothesis_profiles import examples

SCHEMA = json.loads(SCHEMA_PATH.read_text())

# -- strategies: every field, including hostile text -------------------------
text = st.text(max_size=30)
names = st.text(min_size=1, max_size=20)
nonneg = st.integers(min_value=0, max_value=2**50)
seconds = st.floats(min_value=0, max_value=1e5, allow_nan=False, allow_infinity=False)
categories = st.sampled_from(CATEGORIES)


@st.composite
def timelines(draw, device: str):
    n = draw(st.integers(0, 30))
    labels = draw(st.lists(names, max_size=4))
    idx = st.integers(-1, len(labels) - 1)
    return Timeline(
        device=device,
        t=sorted(draw(st.lists(seconds, min_size=n, max_size=n))),
        live_bytes=draw(st.lists(nonneg, min_size=n, max_size=n)),
        by_category=draw(st.dictionaries(categories, st.lists(nonneg, min_size=n, max_size=n), max_size=3)),
        op=draw(st.lists(idx, min_size=n, max_size=n)) if labels else [],
        layer=draw(st.lists(idx, min_size=n, max_size=n)) if labels else [],
        labels=labels,
        recorded_points=draw(nonneg),
    )


devices = st.builds(
    Device,
    name=names,
    kind=st.sampled_from(["allocator", "process"]),
    source=names,
    peak_bytes=nonneg,
    baseline_bytes=nonneg,
    end_bytes=nonneg,
    capacity_bytes=st.none() | nonneg,
    baseline_by_category=st.dictionaries(categories, nonneg, max_size=3),
)
tensors = st.builds(
    TensorInfo,
    shape=st.lists(st.integers(0, 10_000), max_size=4),
    dtype=names,
    bytes=nonneg,
    category=categories,
    op=st.none() | text,
    layer=st.none() | text,
    device=st.none() | names,
)
peaks = st.builds(
    Peak,
    device=names,
    time_s=seconds,
    bytes=nonneg,
    op=st.none() | text,
    layer=st.none() | text,
    by_category=st.dictionaries(categories, nonneg),
    by_layer=st.dictionaries(text, nonneg, max_size=4),
    by_op=st.dictionaries(text, nonneg, max_size=4),
    tensors=st.lists(tensors, max_size=3),
)
ops = st.builds(
    OpStat,
    name=text,
    device=names,
    calls=nonneg,
    allocated_bytes=nonneg,
    self_allocated_bytes=nonneg,
    freed_bytes=nonneg,
    net_bytes=st.integers(-(2**50), 2**50),
    max_alloc_bytes=nonneg,
    input_shapes=st.lists(text, max_size=3),
)
layers = st.builds(
    LayerStat,
    name=text,
    type=names,
    parent=st.none() | text,
    parameter_bytes=nonneg,
    gradient_bytes=nonneg,
    activation_bytes=nonneg,
    temporary_bytes=nonneg,
    forward_bytes=nonneg,
    backward_bytes=nonneg,
    peak_bytes=nonneg,
)
suggestions = st.builds(
    Suggestion,
    id=names,
    title=text,
    evidence=text,
    code=text,
    placement=st.sampled_from(["below", "top"]),
    estimated_saving_bytes=st.none() | nonneg,
    measured_saving_bytes=st.none() | st.integers(-(2**40), 2**40),
    restart_kernel=st.booleans(),
    can_try=st.booleans(),
)


@st.composite
def profiles(draw):
    devs = draw(st.lists(devices, max_size=3, unique_by=lambda d: d.name))
    return Profile(
        id=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        name=draw(text),
        started_at=draw(st.datetimes()).isoformat() + "+00:00",
        duration_s=draw(seconds),
        source=draw(text),
        frameworks=draw(st.lists(st.builds(Framework, name=names, version=names), max_size=2)),
        devices=devs,
        timelines=[draw(timelines(d.name)) for d in devs],
        ops=draw(st.lists(ops, max_size=3)),
        layers=draw(st.lists(layers, max_size=3)),
        peak=draw(st.none() | peaks),
        suggestions=draw(st.lists(suggestions, max_size=2)),
        error=draw(st.none() | st.builds(ErrorInfo, type=names, message=text, traceback=text)),
        warnings=draw(st.lists(st.builds(Note, code=names, message=text), max_size=2)),
        capture=draw(st.dictionaries(names, text, max_size=3)),
    )


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_json_round_trip_is_identity(profile):
    text_ = profile.to_json()
    assert Profile.from_json(text_) == profile
    assert Profile.from_json(profile.to_json(indent=2)) == profile


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
@pytest.mark.slow
def test_every_profile_validates_against_the_shipped_schema(profile):
    jsonschema.validate(json.loads(profile.to_json()), SCHEMA)


@settings(max_examples=examples(20), deadline=None)
@given(profiles())
def test_save_load_plain_and_gzip(tmp_path_factory, profile):
    d = tmp_path_factory.mktemp("p")
    for name in ("p.json", "p.json.gz"):
        path = profile.save(d / name)
        assert memprofile.load(path) == profile
    assert (d / "p.json.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_shipped_schema_is_generated_from_the_dataclasses():
    assert SCHEMA_PATH.read_text() == schema_text(), (
        "profile.schema.json is stale: run `python -m memprofile.model.schema --write` and `jlpm build:types`"
    )


def test_schema_rejects_what_the_model_forbids():
    good = json.loads(make_profile().to_json())
    jsonschema.validate(good, SCHEMA)
    for path, value in [(("duration_s",), -1.0), (("devices", 0, "kind"), "gpu-ish"), (("schema_version",), 99)]:
        bad = json.loads(make_profile().to_json())
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "not JSON"),
        (b"hello", "not JSON"),
        (b"\x89PNG\r\n\x1a\n", "not JSON"),
        (b"[1, 2]", "not a memprofile profile"),
        (b'{"cells": [], "nbformat": 4}', "not a memprofile profile"),
        (b'{"schema_version": 99, "peak": null}', "newer than the 1"),
        (b'{"schema_version": "1", "peak": null}', "schema_version must be an integer"),
        (b'{"schema_version": 1, "peak": null, "name": "x"}', "missing required field 'id'"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    ],
)
def test_reading_something_else_says_what_is_wrong(tmp_path, content, expected):
    path = tmp_path / "thing.json"
    path.write_bytes(content)
    with pytest.raises(ProfileFormatError, match=expected) as info:
        memprofile.load(path)
    assert str(path) in str(info.value)


def test_wrong_field_type_names_the_field():
    data = json.loads(make_profile().to_json())
    data["devices"][0]["peak_bytes"] = "lots"
    with pytest.raises(ProfileFormatError, match=r"profile\.devices\[0\]\.peak_bytes: expected an integer"):
        Profile.from_dict(data)
    data = json.loads(make_profile().to_json())
    data["devices"][0]["kind"] = "gpu"
    with pytest.raises(ProfileFormatError, match=r"devices\[0\]\.kind: expected one of"):
        Profile.from_dict(data)


def test_newer_schema_message_says_upgrade():
    data = json.loads(make_profile().to_json())
    data["schema_version"] = 2
    with pytest.raises(ProfileFormatError, match="upgrade memprofile"):
        Profile.from_dict(data)


def test_unknown_fields_from_a_newer_minor_writer_are_ignored():
    data = json.loads(make_profile().to_json())
    data["something_new"] = {"x": 1}
    data["devices"][0]["also_new"] = 3
    assert Profile.from_dict(data) == make_profile()


def test_missing_file_says_so(tmp_path):
    with pytest.raises(ProfileFormatError, match="cannot read profile"):
        memprofile.load(tmp_path / "nope.json")


def test_peak_bytes_prefers_framework_allocators_over_process_rss():
    p = make_profile()
    assert p.peak_bytes == p.devices[0].peak_bytes  # host only: the process peak
    p.devices.append(Device("cpu", "allocator", "c10", 10 * 2**20, 0, 0))
    assert p.peak_device.name == "cpu" and p.peak_bytes == 10 * 2**20


def test_peak_device_is_one_the_run_added_memory_to():
    # GIVEN a torch allocator holding a model the cell never touched, and TF's that grew
    p = make_profile()
    p.devices.append(Device("cpu", "allocator", "c10", 9 * 2**20, 9 * 2**20, 9 * 2**20))
    p.devices.append(Device("tf:CPU:0", "allocator", "cpu", 7 * 2**20, 2**20, 2**20))
    # THEN the headline is TF's peak, not the idle one's
    assert p.peak_device.name == "tf:CPU:0" and p.peak_bytes == 7 * 2**20
    # AND when no allocator grew but the process did (a numpy cell), the process is the headline
    p.devices[-1] = Device("tf:CPU:0", "allocator", "cpu", 2**20, 2**20, 2**20)
    assert p.peak_device.name == "host"
    # AND when nothing grew at all, the highest allocator is
    host = p.device("host")
    host.baseline_bytes = host.peak_bytes
    assert p.peak_device.name == "cpu"


def test_error_info_reads_like_a_dict():
    e = ErrorInfo("ValueError", "bad")
    assert e["type"] == "ValueError" and e["message"] == "bad"
    with pytest.raises(KeyError):
        e["nope"]
