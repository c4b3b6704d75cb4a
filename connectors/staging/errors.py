"""The staging area's error type."""

from __future__ import annotations

from core.errors import PersonaSyncError


class StagingError(PersonaSyncError):
    """Staging refused a table or could not read its files: names the object, column or file, and the fix."""
