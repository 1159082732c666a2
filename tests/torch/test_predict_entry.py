"""`%%memprofile --predict` and `memprofile predict`: the same predictions from the magic
and the command line, and usage errors that say what is known."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from IPython.core.error import UsageError  # noqa: E402

from memprofile import cli  # noqa: E402
from memprofile.analysis.predict.devices import device_spec  # noqa: E402
from tests.cells import run_cell as _run  # noqa: E402

# the shell is the session's: the names these cells bind are put back after each test
pytestmark = pytest.mark.usefixtures("names_back")


SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
unet_ish = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Upsample(scale_factor=2), nn.Conv2d(16, 1, 3, padding=1))
sgd = torch.optim.SGD(unet_ish.parameters(), lr=0.01, momentum=0.9)
images, masks = torch.randn(2, 3, 32, 32), torch.randn(2, 1, 64, 64)
"""
CELL = """
for _ in range(2):
    sgd.zero_grad()
    torch.nn.functional.mse_loss(unet_ish(images), masks).backward()
    sgd.step()
"""


def test_the_magic_predicts_each_device_and_batch_asked(ip, fresh_store, capsys):
    _run(ip, SETUP)
    _run(ip, CELL)
    p = _run(ip, "%%memprofile -q -n seg --predict T4,H100-80GB,T4:16\n" + CELL)
    assert [(x.device, x.batch) for x in p.predictions] == [("T4", 2), ("H100-80GB", 2), ("T4", 16)]
    assert all(x.method == "fake execution" and x.largest_batch for x in p.predictions)
    assert p.predictions[2].allocated_peak_bytes > p.predictions[0].allocated_peak_bytes
    assert p.predictions[1].capacity_bytes == device_spec("H100").capacity_bytes


@pytest.mark.parametrize("option", ["K80", "T4:lots", "T4:16:2x:9", ""])
def test_a_bad_predict_option_is_a_usage_error_and_runs_nothing(ip, fresh_store, option):
    _run(ip, "ran = 0")
    with pytest.raises(UsageError, match="--predict|known are|DEVICE"):
        ip.run_cell_magic("memprofile", f"--predict '{option}'", "ran += 1\n")
    assert ip.user_ns["ran"] == 0 and len(fresh_store) == 0


def test_the_cli_replays_a_saved_profile_and_says_so(ip, fresh_store, tmp_path, capsys):
    _run(ip, SETUP)
    p = _run(ip, "%%memprofile -q -n seg\n" + CELL)
    p.save(tmp_path / "seg.json.gz")
    assert (
        cli.main(
            [
                "predict",
                str(tmp_path / "seg.json.gz"),
                "--device",
                "T4",
                "--batch",
                "8x",
                "-o",
                str(tmp_path / "with.json.gz"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("T4, batch 16 (measured at 2): predicted fits") and "(replay)" in out
    assert "replayed" in out and "largest batch that fits (predicted)" in out
    with pytest.raises(SystemExit) as bad:
        cli.main(["predict", str(tmp_path / "seg.json.gz"), "--device", "K80"])
    assert bad.value.code == 2 and "known are" in capsys.readouterr().err
