"""Qualified layer names ("encoder.layers.3.self_attn") and the trees they form."""

from __future__ import annotations

from collections.abc import Mapping


def root_of(name: str, parents: Mapping[str, str | None]) -> str:
    """The root of a layer tree given each layer's parent (a name, or None)."""
    seen = set()
    while parents.get(name) and name not in seen:  # guard against a cycle in bad data
        seen.add(name)
        name = parents[name]  # type: ignore[assignment]
    return name
