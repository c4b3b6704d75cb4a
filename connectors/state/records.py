"""What the state store hands out and takes in: plain, frozen dataclasses, free of SQLAlchemy.

Every datetime here is timezone-aware UTC, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

PullMode = Literal["rest", "bulk"]


@dataclass(frozen=True)
class RunRecord:
    """One execution of a flow, as the run ledger holds it."""

    id: str
    flow: str
    parameters: dict[str, Any]
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    counts: dict[str, Any] | None = None
    api_calls: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Watermark:
    """How far an object has been pulled: the cursor value to resume from, and where history starts.

    `history_start` is recorded with the watermark so the start of history is never a silent default.
    """

    sobject: str
    cursor_field: str
    value: datetime
    history_start: datetime
    updated_at: datetime
    run_id: str


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record that could not be staged, kept with the reason and the raw values as received.

    `record_id` is None when the record came without a usable Id. `run_id` is the run that last saw it;
    `first_seen_at` and `last_seen_at` are filled in by the store (leave them out when quarantining).
    """

    sobject: str
    record_id: str | None
    reason: str
    raw: dict[str, Any]
    run_id: str
    first_seen_at: datetime | None = field(default=None, compare=False)
    last_seen_at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PullStats:
    """What one run pulled for one object: shown to operators and compared across runs."""

    run_id: str
    sobject: str
    mode: PullMode
    rows: int
    deleted: int
    quarantined: int
    api_calls: int
    seconds: float
    watermark_from: datetime | None
    watermark_to: datetime | None
