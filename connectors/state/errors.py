"""The state database's error type."""

from __future__ import annotations

from persona_sync.errors import PersonaSyncError


class StateError(PersonaSyncError):
    """The state database refused an operation: names the run, object or value, and what to do."""
