"""persona-sync's own bookkeeping database: run ledger, watermarks, quarantine and pull statistics.

SQLAlchemy 2 (typed ORM models in `tables.py`) over SQLite by default and PostgreSQL in production; the
schema is managed by alembic revisions shipped in `migrations/` and applied from code by
`StateStore.ensure_schema()`. Every datetime going in must be timezone-aware and comes out in UTC.
"""

from connectors.state.errors import LockedError, OrgMismatchError, StateError
from connectors.state.records import LedgerEntry, PullStats, QuarantinedRecord, RunRecord, Watermark
from connectors.state.store import StateStore

__all__ = ["LedgerEntry", "LockedError", "OrgMismatchError", "PullStats", "QuarantinedRecord", "RunRecord",
           "StateError", "StateStore", "Watermark"]
