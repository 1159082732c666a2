"""Will it fit from the panel: a "predict" request to a real kernel, as JupyterLab sends it."""

from __future__ import annotations

import pytest

from tests.integration.test_panel_comm import panel  # noqa: F401  (the real kernel and its comm)

pytestmark = pytest.mark.kernel

TRAIN = """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.Adam(model.parameters())
x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
"""
STEP = """
opt.zero_grad()
nn.functional.cross_entropy(model(x), y).backward()
opt.step()
"""


def test_predict_from_the_panel_answers_with_the_prediction_and_its_words(panel):  # noqa: F811
    # GIVEN a small torch training cell profiled in a real kernel with the comm open
    panel.execute("%load_ext memprofile")
    panel.execute(TRAIN)
    panel.execute(STEP)  # Adam's state exists before the profiled run, as in a notebook
    panel.execute("%%memprofile -q --name train\n" + STEP)
    (summary,) = panel.request({"type": "sync"})["items"]
    # WHEN the panel asks whether it fits on a T4 at 4x the batch
    reply = panel.request({"type": "predict", "id": summary["id"], "device": "T4", "batch": "4x"})
    # THEN the kernel answers with the prediction, made by the fake re-execution, every figure predicted
    assert reply["type"] == "predicted", reply
    p = reply["prediction"]
    assert p["device"] == "T4" and p["batch"] == 64 and p["measured_batch"] == 16
    assert p["fits"] is True and p["largest_batch"] > 64 and p["method"] == "fake execution"
    assert p["device_total_bytes"] > p["reserved_peak_bytes"] >= p["allocated_peak_bytes"] > 0
    assert reply["text"].startswith("T4, batch 64 (measured at 16): predicted fits")
    assert "largest batch that fits (predicted)" in reply["text"]
    # AND the profile keeps it: the panel's payload lists it, the card's line names it
    profile = panel.request({"type": "get_profile", "id": summary["id"]})
    assert [q["device"] for q in profile["predictions"]] == ["T4"]
    assert "T4" in profile["known_devices"] and "H100-80GB" in profile["known_devices"]
    assert profile["summary"]["fits_line"].startswith("predicted fits: batch 64 on T4 ✓")


def test_a_custom_capacity_and_the_errors_come_back_as_the_panel_shows_them(panel):  # noqa: F811
    panel.execute("%load_ext memprofile")
    panel.execute(TRAIN)
    panel.execute("%%memprofile -q --name train\n" + STEP)
    (summary,) = panel.request({"type": "sync"})["items"]
    # a capacity in bytes (the panel's "custom, GB"), at the measured batch
    custom = panel.request({"type": "predict", "id": summary["id"], "capacity_bytes": 12 * 10**9})
    assert custom["type"] == "predicted" and custom["prediction"]["capacity_bytes"] == 12 * 10**9
    # an unknown device: the ValueError's own message, naming the known ones
    unknown = panel.request({"type": "predict", "id": summary["id"], "device": "T5"})
    assert unknown["type"] == "error" and unknown["message"].startswith("unknown device 'T5': known are cpu, T4")
    # a batch that is neither a number nor a factor
    bad = panel.request({"type": "predict", "id": summary["id"], "device": "T4", "batch": "lots"})
    assert bad["type"] == "error" and "give a number" in bad["message"] and "4x" in bad["message"]
    # neither a device nor a capacity
    none = panel.request({"type": "predict", "id": summary["id"]})
    assert none == {
        "type": "error",
        "message": "choose a device, or give its capacity",
        "request_id": none["request_id"],
    }
