"""A merged profile: the ranks of one distributed job read as one.

`MergedProfile` is a Profile (its fields are the highest rank's, so every
view shows that rank in detail) whose `merged` holds every rank's summary,
plus the per-rank Profiles themselves: `.ranks`, read from their files when
asked for (a 128-rank job's profiles are not all held in memory at once),
and `.highest_rank`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

from memprofile.model.profile import Profile


class RankProfiles(Sequence[Profile]):
    """The ranks' Profiles in rank order: those merged from memory as they
    are, those merged from files loaded on access (the last few kept)."""

    KEEP = 4

    def __init__(self, sources: list[Profile | str]) -> None:
        self._sources = sources
        self._loaded: OrderedDict[int, Profile] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    @overload
    def __getitem__(self, i: int) -> Profile: ...

    @overload
    def __getitem__(self, i: slice) -> list[Profile]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        source = self._sources[i]
        if isinstance(source, Profile):
            return source
        i %= len(self)
        if i not in self._loaded:
            from memprofile.errors import ProfileFormatError
            from memprofile.model.codec import load

            if not source:
                raise ProfileFormatError(
                    f"rank profile {i} was merged from memory, not from a file: it was not "
                    f"saved with the merged profile"
                )

            self._loaded[i] = load(source)
            while len(self._loaded) > self.KEEP:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(i)
        return self._loaded[i]

    def __repr__(self) -> str:
        return f"<{len(self)} rank profiles>"


@dataclass
class MergedProfile(Profile):
    """See the module's docstring. Saved and loaded like any Profile; a
    loaded one finds its ranks' files again by the paths it recorded."""

    def __post_init__(self) -> None:
        self._rank_profiles: RankProfiles | None = None

    @property
    def ranks(self) -> RankProfiles:
        if self._rank_profiles is None:
            assert self.merged is not None
            self._rank_profiles = RankProfiles([r.path for r in self.merged.ranks])
        return self._rank_profiles

    @ranks.setter
    def ranks(self, value: RankProfiles) -> None:
        self._rank_profiles = value

    @property
    def highest_rank(self) -> Profile:
        """The Profile of the rank whose peak is highest."""
        assert self.merged is not None
        return self.ranks[self.merged.ranks.index(self.merged.summary_of(self.merged.highest))]

    # The job's figures, also under .merged (MergeInfo) with every rank's.
    @property
    def world_size(self) -> int:
        assert self.merged is not None
        return self.merged.world_size

    @property
    def imbalance(self) -> float:
        """The highest rank's peak over the mean rank's, minus 1 (0.25: it holds 25 % more)."""
        assert self.merged is not None
        return self.merged.imbalance

    @property
    def skew_s(self) -> float:
        """How far apart the ranks started, by their hosts' wall clocks."""
        assert self.merged is not None
        return self.merged.skew_s

    def __repr__(self) -> str:
        m = self.merged
        if m is None:
            return super().__repr__()
        from memprofile.units import fmt_bytes

        return (
            f"<MergedProfile {self.name!r}: {len(m.ranks)} of {m.world_size} ranks, highest rank {m.highest} "
            f"at {fmt_bytes(self.peak_bytes)}, imbalance {m.imbalance:+.0%}>"
        )
