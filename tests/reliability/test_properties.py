"""Issue 14: property tests over what a user can hand memprofile.

- the magics' argument strings: a run or a usage message, never a traceback;
- file loading: random bytes, truncated and mutated valid files: a Profile or
  ProfileFormatError, nothing else;
- the renderers: random valid profiles through text, the HTML fallback, the
  MIME bundle and the report never raise, and hostile names come out escaped.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from memprofile import Profile, ProfileFormatError
from memprofile.model import codec
from memprofile.render.bundle import MIME_TYPE, mime_bundle
from memprofile.render.text import render_text
from tests.builders import make_profile, make_rich_profile
from tests.hypothesis_profiles import examples
from tests.unit.test_model import profiles

# the shell and capsys are the same for every example: sharing them is the point
SLOW_OK = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- the magics' argument strings --------------------------------------------

OPTIONS = [
    "--name",
    "-n",
    "--interval",
    "--no-reset-peak",
    "--no-shapes",
    "--stack",
    "--no-torch",
    "--no-tf",
    "--tf-max-events",
    "--detail-steps",
    "--budget",
    "--quiet",
    "-q",
    "--cuda-history",
]
VALUES = [
    "5",
    "-1",
    "0",
    "1e9",
    "nan",
    "all",
    "3-2",
    "10-",
    "512M",
    "2G",
    "1",
    "x y",
    "'a b'",
    '"two words"',
    "'",
    '"',
    "\\",
    "--",
    "=",
    "In [3]",
]
words = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(VALUES), st.text(max_size=8))
argument_lines = st.lists(words, max_size=6).map(" ".join)
# export writes files where it is told and insert replaces the cell: left out
COMMANDS = ["list", "show", "compare", "clear", "display", "auto", "-1", "0", "7", "deadbeef", '"no such"', "'"]
command_lines = st.lists(st.one_of(st.sampled_from(COMMANDS), st.text(max_size=8)), max_size=4).map(" ".join)


@settings(max_examples=examples(200), **SLOW_OK)
@given(line=argument_lines)
def test_cell_magic_arguments_run_or_give_usage(ip, line):
    """Every argument string runs the cell or is a UsageError."""
    try:
        ip.run_cell_magic("memprofile", line + " --quiet", "hyp_x = 1\n")
    except UsageError as exc:
        assert str(exc).strip()


@settings(max_examples=examples(200), **SLOW_OK)
@given(line=command_lines)
def test_line_magic_commands_run_or_give_usage(ip, line, capsys):
    from memprofile.jupyter.display import set_display_mode
    from memprofile.store import STORE

    STORE.add(make_profile(name="stored"))
    try:
        ip.run_line_magic("memprofile", line)
    except UsageError as exc:
        assert str(exc).strip()
    finally:
        set_display_mode("auto")


# -- file loading ----------------------------------------------------------

VALID = make_rich_profile(name="valid").to_json().encode()


def _loads_or_format_error(data: bytes) -> None:
    try:
        assert isinstance(codec.loads(data), Profile)
    except ProfileFormatError as exc:
        assert len(str(exc)) <= 500


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=2_000))
def test_random_bytes_never_raise_anything_but_format_error(data):
    _loads_or_format_error(data)
    _loads_or_format_error(b"\x1f\x8b" + data)  # as if gzip


@settings(max_examples=examples(300), deadline=None)
@given(cut=st.integers(0, len(VALID)), gz=st.booleans())
def test_truncated_files(cut, gz):
    data = gzip.compress(VALID) if gz else VALID
    _loads_or_format_error(data[: cut % (len(data) + 1)])


@settings(max_examples=examples(300), deadline=None)
@given(at=st.lists(st.integers(0, len(VALID) - 1), min_size=1, max_size=5), byte=st.integers(0, 255))
def test_byte_flips(at, byte):
    data = bytearray(VALID)
    for i in at:
        data[i] = byte
    _loads_or_format_error(bytes(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def _leaf_paths(value, path=()):
    """Every place in a JSON tree (containers and leaves) as a path of keys."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _leaf_paths(child, (*path, key))


PATHS = list(_leaf_paths(json.loads(VALID)))


@settings(max_examples=examples(500), deadline=None)
@given(where=st.sampled_from(PATHS[1:]), value=json_values)
def test_any_field_replaced_by_any_json(where, value):
    data = json.loads(VALID)
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    _loads_or_format_error(json.dumps(data).encode())


# -- the renderers -------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "</div><b>x",
        "&lt;",
        "\"'><svg/onload=1>",
        "\u202e\u0000",
    ]
) | st.text(max_size=20)


def _escaped(html: str, name: str, plain_html: str) -> None:
    """`name`, where it holds markup, is not in `html` as it is, unless
    memprofile's own markup holds it anyway (`plain_html`: the same render
    with harmless names): hypothesis found the name "<"."""
    if "<" in name and name not in plain_html:
        assert name not in html


@functools.cache
def _plain_render(kind: str) -> str:
    """The rich profile's bundle HTML or report with harmless names (once)."""
    from memprofile.render.report import render_report

    profile = make_rich_profile(name="x", text="y", n_points=60)
    return mime_bundle(profile)["text/html"] if kind == "bundle" else render_report(profile)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_text_and_bundle_of_any_profile(profile):
    assert isinstance(render_text(profile), str)
    bundle = mime_bundle(profile)
    assert {MIME_TYPE, "text/html", "text/plain"} <= set(bundle)
    json.dumps(bundle[MIME_TYPE])
    _escaped(bundle["text/html"], profile.name, mime_bundle(dataclasses.replace(profile, name="x"))["text/html"])


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HOSTILE, text=HOSTILE)
def test_hostile_names_escaped_in_bundle(name, text):
    bundle = mime_bundle(make_rich_profile(name=name or "x", text=text, n_points=60))
    plain = _plain_render("bundle")
    _escaped(bundle["text/html"], name, plain)
    _escaped(bundle["text/html"], text, plain)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HOSTILE, text=HOSTILE)
def test_hostile_names_escaped_in_report(name, text):
    pytest.importorskip("bokeh")
    from memprofile.render.report import render_report

    html = render_report(make_rich_profile(name=name or "x", text=text, n_points=60))
    plain = _plain_render("report")
    _escaped(html, name, plain)
    _escaped(html, text, plain)
