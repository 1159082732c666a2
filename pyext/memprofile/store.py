"""The process-wide profile store: bounded, thread-safe, observable.

Comm messages may arrive on another thread than the one that runs cells, so
every access holds the lock. When the bound is reached the oldest profile is
dropped and counted (`dropped`), never silently.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from memprofile.model.profile import Profile

DEFAULT_CAPACITY = 50

Listener = Callable[[str, Profile | None], None]  # (event, profile): "added" | "cleared"


class ProfileStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._lock = threading.RLock()
        self._profiles: deque[Profile] = deque()
        self._capacity = capacity
        self._listeners: list[Listener] = []
        self.dropped = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"capacity must be at least 1, got {value}")
        with self._lock:
            self._capacity = value
            self._trim()

    def _trim(self) -> None:
        while len(self._profiles) > self._capacity:
            self._profiles.popleft()
            self.dropped += 1

    def add(self, profile: Profile) -> None:
        with self._lock:
            self._profiles.append(profile)
            self._trim()
            listeners = list(self._listeners)
        for listener in listeners:
            listener("added", profile)

    def last(self) -> Profile | None:
        with self._lock:
            return self._profiles[-1] if self._profiles else None

    def all(self) -> list[Profile]:
        with self._lock:
            return list(self._profiles)

    def get(self, key: str | int) -> Profile:
        """By id (or a unique id prefix), by name, or by position (-1 is the newest)."""
        with self._lock:
            profiles = list(self._profiles)
        if not profiles:
            raise KeyError("no profiles yet: run a cell with %%memprofile first")
        if isinstance(key, int):
            try:
                return profiles[key]
            except IndexError:
                raise KeyError(f"no profile at position {key}; there are {len(profiles)}") from None
        matches = [p for p in profiles if p.id.startswith(key)] if key else []
        if len(matches) == 1:
            return matches[0]
        by_name = [p for p in profiles if p.name == key]
        if by_name:
            return by_name[-1]
        if len(matches) > 1:
            raise KeyError(f"{key!r} matches {len(matches)} profile ids; give more characters")
        raise KeyError(f"no profile with id or name {key!r}; `%memprofile list` shows them")

    def clear(self) -> None:
        with self._lock:
            self._profiles.clear()
            listeners = list(self._listeners)
        for listener in listeners:
            listener("cleared", None)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def __len__(self) -> int:
        with self._lock:
            return len(self._profiles)


STORE = ProfileStore()
