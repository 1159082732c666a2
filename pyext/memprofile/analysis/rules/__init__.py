"""Suggestion rules: each module looks at an analysed Profile and returns a
Suggestion (evidence from this profile, an estimated saving, code) or None.

A rule that fails is skipped with a note: a broken rule must not lose the
profile. Rules are ordered by what they save, largest first.
"""

from __future__ import annotations

import importlib

from memprofile.model.profile import Note, Profile, Suggestion

#: The note a failed rule leaves on the profile.
RULE_FAILED = "rule_failed"

#: Module names under analysis/rules/, one rule each.
RULES = (
    "tf_memory_growth",
    "amp",
    "gradient_checkpointing",
    "inference_mode",
    "zero_grad",
    "optimizer_state",
    "chunked_loss",
    "batch_size",
    "fragmentation",
    "headroom",
    "sdpa",
    "quantize_dynamic",
    "stream_dataset",
    "notebook_leak",
    "kept_per_step",
)


def suggest(profile: Profile) -> list[Suggestion]:
    from memprofile.analysis.rules.facts import Facts

    facts = Facts(profile)
    found: list[Suggestion] = []
    for name in RULES:
        try:
            rule = importlib.import_module(f"memprofile.analysis.rules.{name}")
            suggestion = rule.check(facts)
        except Exception as exc:  # never lose the profile to a rule
            profile.warnings.append(Note(RULE_FAILED, f"the suggestion rule {name!r} failed: {exc!r}"))
            continue
        if suggestion is not None:
            found.append(suggestion)
    found.sort(key=lambda s: -(s.estimated_saving_bytes or 0))
    return found
