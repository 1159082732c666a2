"""Analysis is a function of the Profile: it runs again on a profile loaded
from its JSON (an older memprofile's, or an imported GPU trace's), gives what
the live run gave, and running it twice adds nothing twice."""

from __future__ import annotations

import torch
from torch import nn

import memprofile
from memprofile.analysis.analyse import analyse
from memprofile.importing import import_trace
from memprofile.model.profile import Profile
from tests.imports import H100


def _findings(profile: Profile) -> tuple[list, list]:
    return (
        [(s.id, s.estimated_saving_bytes) for s in profile.suggestions],
        sorted((n.code, n.message, n.fix) for n in profile.warnings),
    )


def test_a_loaded_profile_is_analysed_again_to_the_same_findings():
    # GIVEN a live profile of a model built inside the block, trained 8 steps with Adam
    # (suggestions, and step notes: steps 1-3 in detail)
    with memprofile.profile(store=False) as p:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256))
        opt = torch.optim.Adam(net.parameters())
        batch = torch.randn(512, 256)
        for _ in range(8):
            opt.zero_grad()
            net(batch).square().mean().backward()
            opt.step()
    live = _findings(p)
    assert live[0] and any(code == "detail_steps" for code, _, _ in live[1]), live
    # WHEN it is saved, loaded without its suggestions (an older memprofile's file), and analysed
    loaded = Profile.from_json(p.to_json())
    loaded.suggestions = []
    analyse(loaded)
    # THEN the findings are the live run's, and a second run changes nothing
    assert _findings(loaded) == live
    analyse(loaded)
    assert _findings(loaded) == live


def test_an_imported_gpu_trace_is_analysed_again_from_its_json(tmp_path):
    # GIVEN a real H100 trace imported as a profile, written to JSON and read back
    imported = import_trace(H100)
    loaded = Profile.from_json(imported.to_json())
    # WHEN the loaded profile is analysed again
    analyse(loaded)
    # THEN it gives the import's findings
    assert _findings(loaded) == _findings(imported)
