"""compare(a, b) and its renderings, on profiles built in the test."""

from __future__ import annotations

import memprofile
from memprofile.model.profile import Peak
from tests.builders import make_rich_profile

HOSTILE = "<img src=x onerror=alert(1)>"


def test_compare_puts_the_peak_first_and_ranks_changes_by_size():
    a, b = make_rich_profile(name="before"), make_rich_profile(name="after")
    b.devices = [d for d in b.devices]
    cpu = b.device("cpu")
    cpu.peak_bytes = a.device("cpu").peak_bytes - 2**30
    b.duration_s = a.duration_s * 1.5
    b.peak = Peak("cpu", 0.1, cpu.peak_bytes, by_category={"parameter": 2**20, "activation": 2**20},
                  by_layer={"head": 3 * 2**20})
    b.ops = b.ops[:10]
    c = memprofile.compare(a, b)
    assert c.device == "cpu" and c.saving_bytes == 2**30 and abs(c.time_change - 0.5) < 1e-9
    assert [x.name for x in c.categories] == ["parameter", "activation"]
    assert c.categories[1].delta == -4 * 2**20
    assert c.layers[0].name.startswith("encoder") and c.layers[0].delta == -5 * 2**20
    assert c.more_ops == 590 - 15 and len(c.ops) == 15
    text = repr(c)
    assert text.startswith("memprofile compare 'before' -> 'after': peak -1.00 GiB") and "time +50 %" in text


def test_compare_html_escapes_names():
    a = make_rich_profile(name=HOSTILE, text=HOSTILE)
    b = make_rich_profile(name="b")
    html = memprofile.compare(a, b)._repr_mimebundle_()["text/html"]
    assert "<img" not in html and "&lt;img" in html
