"""One error base class; every message says what to do next."""

from __future__ import annotations


class MemprofileError(Exception):
    """Base of every error memprofile raises on purpose."""


class ProfileFormatError(MemprofileError, ValueError):
    """A file or string that is not a readable memprofile profile."""


class CaptureError(MemprofileError, RuntimeError):
    """A collector could not start or stop."""
