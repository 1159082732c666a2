"""Analysis over a Profile: its suggestions and the notes on its training
steps. A function of the Profile alone (the events it was built from are
gone), so newer rules run on a loaded, old or imported profile too."""

from __future__ import annotations

from memprofile.analysis.rules import RULE_FAILED, suggest
from memprofile.analysis.steps import STEP_NOTE_CODES, peak_scope, step_notes
from memprofile.model.profile import Profile


def analyse(profile: Profile) -> Profile:
    """Fill the profile's suggestions and step notes (in place; returned).
    Run again, it replaces what an earlier run wrote (a loaded profile's
    suggestions from an older memprofile, say) and keeps the capture's notes."""
    ours = STEP_NOTE_CODES | {RULE_FAILED}
    profile.warnings = [n for n in profile.warnings if n.code not in ours]
    profile.suggestions = suggest(profile)
    for s in profile.suggestions:  # the rules model the recorded timeline; whatif/ may measure them after
        if s.estimated_saving_bytes is not None:
            s.estimate_method = "replay"
    profile.warnings.extend(step_notes(profile))
    profile.peak_scope = peak_scope(profile)
    return profile
