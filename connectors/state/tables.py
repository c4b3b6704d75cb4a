"""The state database's tables, as typed SQLAlchemy ORM models.

The models are what the store reads and writes; the alembic revisions in `migrations/versions/` are what
creates the tables. A test holds the two together (no pending autogenerate difference), so a change here
comes with a new revision (see `migrations/README.md`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, Dialect, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from connectors.state.errors import StateError

# Named constraints, so later revisions can alter them by name (SQLite batch mode needs the names).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_ID = String(36)
SOBJECT = String(100)


def as_utc(value: datetime, what: str) -> datetime:
    """`value` in UTC; a naive datetime is refused, because its zone would be a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise StateError(f"{what} is a naive datetime ({value.isoformat()}); pass a timezone-aware one "
                         "(datetime.now(UTC), or .replace(tzinfo=UTC) when it is known to be UTC)")
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware, on every database.

    PostgreSQL keeps the zone (timestamptz); SQLite keeps none, so we store naive UTC there and put
    the zone back when reading.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value, "a timestamp for the state database")
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StateBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RunRow(StateBase):
    """The run ledger: one row per flow execution."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(RUN_ID, primary_key=True)
    flow: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    api_calls: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # The index page of the run's Data Docs (the HTML report of its checks), once validation wrote them.
    data_docs: Mapped[str | None] = mapped_column(Text)


class WatermarkRow(StateBase):
    """One cursor per Salesforce object: where the next incremental pull resumes, where the next look for
    deletions resumes (deletions have their own cursor: they are not rows the pull stages), and when the
    object's Ids were last reconciled with the org."""

    __tablename__ = "watermarks"

    sobject: Mapped[str] = mapped_column(SOBJECT, primary_key=True)
    cursor_field: Mapped[str] = mapped_column(String(100))
    value: Mapped[datetime] = mapped_column(UtcDateTime)
    history_start: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"))
    deletions_value: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reconciled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class QuarantineRow(StateBase):
    """Records that could not be staged. `dedupe_key` makes a rerun refresh a row instead of adding one.

    The key hashes (sobject, record id or a fingerprint of the raw values, reason): a plain unique
    constraint would not do, because a NULL record id never conflicts and a long reason overflows an index.
    """

    __tablename__ = "quarantine"
    __table_args__ = (Index(None, "sobject", "record_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    sobject: Mapped[str] = mapped_column(SOBJECT)
    record_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"), index=True)
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PullStatsRow(StateBase):
    """Per run and object: what was pulled, how, and between which watermarks."""

    __tablename__ = "pull_stats"
    __table_args__ = (CheckConstraint("mode IN ('rest', 'bulk')", name="mode"),)

    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"), primary_key=True)
    sobject: Mapped[str] = mapped_column(SOBJECT, primary_key=True)
    mode: Mapped[str] = mapped_column(String(8))
    rows: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[int] = mapped_column(Integer)
    quarantined: Mapped[int] = mapped_column(Integer)
    held: Mapped[int] = mapped_column(Integer, server_default="0")
    purged: Mapped[int] = mapped_column(Integer, server_default="0")
    pruned: Mapped[int] = mapped_column(Integer, server_default="0")
    api_calls: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    watermark_from: Mapped[datetime | None] = mapped_column(UtcDateTime)
    watermark_to: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AssignmentRow(StateBase):
    """One user's persona as one run decided it: the persona, how sure, why, under which catalog and as-of."""

    __tablename__ = "assignments"
    __table_args__ = (Index(None, "user_id", "as_of"),)

    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(18), primary_key=True)
    persona: Mapped[str] = mapped_column(String(80))
    score: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    runner_up: Mapped[str | None] = mapped_column(String(80))
    runner_up_score: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(255))
    catalog_version: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class OrgRow(StateBase):
    """The org this state belongs to (one row): watermarks and staging of one org are wrong for any other."""

    __tablename__ = "org"

    org_id: Mapped[str] = mapped_column(String(18), primary_key=True)
    instance_url: Mapped[str] = mapped_column(String(255))
    bound_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LockRow(StateBase):
    """A named lock (e.g. "pull": one writer of staging at a time), held by one process.

    A holder that dies leaves its row: it is taken over when its process is gone (same host) or its
    heartbeat is older than the stale age (any host)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(36))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CheckRow(StateBase):
    """One check of a run's validation (an expectation, a coverage check or a guardrail) and its outcome:
    what stopped a run, what only warned, and which guardrail an operator forced, with the samples."""

    __tablename__ = "checks"
    __table_args__ = (CheckConstraint("status IN ('passed', 'warned', 'failed', 'forced', 'skipped')",
                                      name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    observed: Mapped[str] = mapped_column(Text)
    limit: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    samples: Mapped[list[str]] = mapped_column(JSON)
    guardrail: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SyncLogRow(StateBase):
    """One planned write of a run to one record of a target, and what became of it.

    The plan is written before the first write (status 'planned'); each write is marked as its call
    returns ('done' or 'failed' with Salesforce's status code). `old_values` are what the record held
    before (what a rollback puts back), `new_values` what the run wrote (what tells a later human edit
    from our own value). 'conflict' rows were not written: the record was edited by a person.
    """

    __tablename__ = "sync_log"
    __table_args__ = (Index(None, "target", "record_id"), Index(None, "run_id", "target", "record_id"),
                      CheckConstraint("status IN ('planned', 'done', 'failed', 'conflict')", name="status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"))
    target: Mapped[str] = mapped_column(String(100))
    record_id: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(16))
    old_values: Mapped[dict[str, Any]] = mapped_column(JSON)
    new_values: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PersonaHistoryRow(StateBase):
    """A user's persona over time, as a slowly changing dimension: one row per stretch of time a user held
    one persona (valid_to None: the current one), with the run that decided it."""

    __tablename__ = "persona_history"
    __table_args__ = (Index(None, "user_id", "valid_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(18))
    persona: Mapped[str] = mapped_column(String(80))
    score: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(255))
    catalog_version: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UtcDateTime)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"))


class GrantRow(StateBase):
    """The grant ledger: a community role persona-sync gave a member, in one target table.

    Written before the target's transaction ('granting', 'revoking') and settled after it against what
    the table then holds ('active', 'revoked'), so a crash in between is resolved by the next run instead
    of leaving a row nobody owns. Only rows this ledger holds are ever revoked."""

    __tablename__ = "grants"
    __table_args__ = (Index(None, "target", "member", "role"),
                      CheckConstraint("status IN ('granting', 'active', 'revoking', 'revoked')", name="status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(255))
    member: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    granted_run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id"))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_run_id: Mapped[str | None] = mapped_column(RUN_ID, ForeignKey("runs.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
