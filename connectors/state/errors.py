"""The state database's error type."""

from __future__ import annotations

from core.errors import PersonaSyncError


class StateError(PersonaSyncError):
    """The state database refused an operation: names the run, object or value, and what to do."""


class OrgMismatchError(StateError):
    """The state belongs to another org than the one the run logged in to."""


class LockedError(StateError):
    """Another process holds a lock this one needs (for example, another pull is running)."""
