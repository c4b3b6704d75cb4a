"""What the state store hands out and takes in: plain, frozen dataclasses, free of SQLAlchemy.

Every datetime here is timezone-aware UTC, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.configs import Transfer


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
    data_docs: str | None = None


@dataclass(frozen=True)
class Watermark:
    """How far an object has been pulled: the cursor value to resume from, and where history starts.

    `history_start` is recorded with the watermark so the start of history is never a silent default.
    `deletions_value` is where the next look for deleted rows resumes (None: never looked), and
    `reconciled_at` when the object's Ids were last compared with the org's (None: never).
    """

    sobject: str
    cursor_field: str
    value: datetime
    history_start: datetime
    updated_at: datetime
    run_id: str
    deletions_value: datetime | None = None
    reconciled_at: datetime | None = None


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
    mode: Transfer
    rows: int
    deleted: int
    quarantined: int
    api_calls: int
    seconds: float
    watermark_from: datetime | None
    watermark_to: datetime | None
    held: int = 0  # rows whose user is not staged yet, held back until the user arrives
    purged: int = 0  # rows the org no longer has (a reconciliation found them gone), removed from staging
    pruned: int = 0  # rows older than the history window, dropped from staging by a compaction


@dataclass
class LedgerEntry:
    """A run being recorded (`StateStore.recorded_run`): fill in what it did; it is written when it ends."""

    id: str
    counts: dict[str, Any] = field(default_factory=dict)
    api_calls: int | None = None
