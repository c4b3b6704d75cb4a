"""The state store: persona-sync's own bookkeeping (run ledger, watermarks, quarantine, pull statistics,
assignments, the org it belongs to, and writer locks).

One object, `StateStore`, over one SQLAlchemy engine: SQLite by default, PostgreSQL in production. Each
method is its own transaction, so what a method has written is committed when it returns (a watermark
is only moved after the rows it covers are staged, and stays moved if the run dies a second later).

The database URL may hold a password: it is taken as a secret and only ever shown with the password
hidden.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pandas as pd
from pydantic import SecretStr
from sqlalchemy import Insert, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from connectors.state.errors import LockedError, OrgMismatchError, StateError
from connectors.state.records import LedgerEntry, PullStats, QuarantinedRecord, RunRecord, Watermark
from connectors.state.schema import create_state_engine, dump_json, upgrade_to_head
from connectors.state.tables import (AssignmentRow, CheckRow, GrantRow, LockRow, OrgRow, PersonaHistoryRow, PullStatsRow,
                                     QuarantineRow, RunRow, SyncLogRow,
                                     WatermarkRow, as_utc)
from core.configs import StateConfig

log = logging.getLogger(__name__)

RUNNING = "running"
ROLLED_BACK = "rolled_back"  # a run whose writes a rollback undid: its assignments count no more
PULL_MODES = ("rest", "bulk")
# Bound parameters per statement stay well under SQLite's and PostgreSQL's limits.
_CHUNK = 500
# A lock holder refreshes its heartbeat this often; a lock whose heartbeat is older than the stale age
# belongs to a process that died on another machine, and may be taken over.
_HEARTBEAT_SECONDS = 30.0
_STALE_LOCK = timedelta(minutes=10)
_LOCK_POLL_SECONDS = 0.5
# Held while the persona history is extended or replayed: a replay reads the stored runs, then rewrites.
_HISTORY_LOCK = "persona-history"


class StateStore:
    """persona-sync's bookkeeping database. Call `ensure_schema()` once per process before anything else."""

    def __init__(self, url: str | SecretStr) -> None:
        secret = url if isinstance(url, SecretStr) else SecretStr(url)
        self._engine = create_state_engine(secret.get_secret_value())
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, config: StateConfig) -> StateStore:
        """The state database a `StateConfig` names."""
        return cls(config.url)

    @property
    def where(self) -> str:
        """The database, for messages: its URL with the password hidden."""
        return self._where()

    def ensure_schema(self) -> None:
        """Brings the schema to the newest revision this package ships; cheap when it is already there."""
        upgrade_to_head(self._engine)

    def close(self) -> None:
        """Closes the pooled connections (a PostgreSQL database can only be dropped after this)."""
        self._engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- run ledger ---------------------------------------------------------------------------------------

    def start_run(self, flow: str, parameters: dict[str, Any]) -> str:
        """Records a run as 'running' now and returns its id (a uuid4 string).

        Parameters are stored as JSON: dates and datetimes become ISO strings, paths become strings.
        """
        _check_json(parameters, f"the parameters of flow {flow!r}")
        run_id = str(uuid4())
        with self._transaction() as session:
            session.add(RunRow(id=run_id, flow=flow, parameters=parameters, status=RUNNING,
                               started_at=_now()))
        return run_id

    def finish_run(self, run_id: str, status: str, *, counts: dict[str, Any] | None = None,
                   api_calls: int | None = None, error: str | None = None) -> None:
        """Records the outcome of a run ('succeeded', 'failed', ...) and when it ended.

        Finishing a run twice overwrites the first outcome (a retried flow reports its final word).
        `api_calls` None keeps what `add_api_calls` recorded.
        """
        if not status or status == RUNNING:
            raise StateError(f"finish_run({run_id!r}) needs a final status such as 'succeeded' or 'failed', "
                             f"not {status!r}")
        if counts is not None:
            _check_json(counts, f"the counts of run {run_id}")
        with self._transaction() as session:
            row = session.get(RunRow, run_id)
            if row is None:
                raise StateError(f"run {run_id} is not in the run ledger ({self._where()}); "
                                 "finish only runs that start_run returned")
            row.status = status
            row.finished_at = _now()
            row.counts = counts
            row.api_calls = row.api_calls if api_calls is None else api_calls
            row.error = error

    def add_api_calls(self, run_id: str, calls: int) -> None:
        """Adds API calls a stage of run `run_id` spent, as it ends (failed or not): what a run spent on the
        org's daily allowance is in the ledger even when the run failed halfway."""
        with self._transaction(f"record the API calls of run {run_id}") as session:
            session.execute(update(RunRow).where(RunRow.id == run_id)
                            .values(api_calls=func.coalesce(RunRow.api_calls, 0) + calls))

    @contextmanager
    def recorded_run(self, flow: str, parameters: dict[str, Any]) -> Iterator[LedgerEntry]:
        """Records a run for the length of the block: 'running' at once, then 'succeeded' with what the block
        put in the entry's counts and api_calls, or 'failed' with the error (which is raised on).

        `with state.recorded_run("nightly_sync", {"as_of": ...}) as run: ... run.counts["rows"] = n`
        """
        entry = LedgerEntry(self.start_run(flow, parameters))
        try:
            yield entry
        except BaseException as error:
            reason = str(error) or type(error).__name__
            self.finish_run(entry.id, "failed", counts=entry.counts or None, api_calls=entry.api_calls,
                            error=reason)
            raise
        self.finish_run(entry.id, "succeeded", counts=entry.counts, api_calls=entry.api_calls)

    def run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None when the ledger has no such run."""
        with self._sessions() as session:
            row = session.get(RunRow, run_id)
            return None if row is None else _run_record(row)

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        with self._sessions() as session:
            rows = session.scalars(select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id.desc())
                                   .limit(limit))
            return [_run_record(row) for row in rows]

    def last_good_run(self, flows: Sequence[str], *, having: str) -> RunRecord | None:
        """The latest succeeded run of one of `flows` whose counts hold `having` (None: there is none): what
        the last good run saw, for the checks that compare a run with it."""
        query = (select(RunRow).where(RunRow.status == "succeeded", RunRow.flow.in_(list(flows)))
                 .order_by(RunRow.started_at.desc(), RunRow.id.desc()))
        with self._sessions() as session:
            for row in session.scalars(query):
                if row.counts and having in row.counts:
                    return _run_record(row)
        return None

    def night_synced(self, night: str) -> bool:
        """Whether a scheduled nightly_sync of `night` (a date, YYYY-MM-DD) has succeeded."""
        query = (select(RunRow.parameters).where(RunRow.flow == "nightly_sync", RunRow.status == "succeeded")
                 .order_by(RunRow.started_at.desc()).limit(50))
        with self._sessions() as session:
            return any((parameters or {}).get("night") == night for parameters in session.scalars(query))

    def runs_by_key(self, flow: str, keys: Sequence[str]) -> dict[str, str]:
        """Of `keys` (the idempotency keys runs of `flow` record in their parameters), those a succeeded run
        (not rolled back) holds: key -> the latest such run's id. How a backfill knows the dates it did."""
        wanted = set(keys)
        query = (select(RunRow.id, RunRow.parameters).where(RunRow.flow == flow, RunRow.status == "succeeded")
                 .order_by(RunRow.started_at))
        with self._sessions() as session:
            return {parameters["key"]: run_id for run_id, parameters in session.execute(query)
                    if parameters and parameters.get("key") in wanted}

    def watermarks(self) -> list[Watermark]:
        """Every object's watermark (objects never pulled have none)."""
        with self._sessions() as session:
            return [self._watermark(row) for row in session.scalars(select(WatermarkRow).order_by(WatermarkRow.sobject))]

    def set_data_docs(self, run_id: str, path: str) -> None:
        """Records where the run's Data Docs (its checks as HTML) are."""
        with self._transaction(f"record the Data Docs of run {run_id}") as session:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(data_docs=path))

    # --- checks -------------------------------------------------------------------------------------------

    def save_checks(self, run_id: str, checks: Sequence[dict[str, Any]]) -> None:
        """Records checks of run `run_id` (dicts with stage, name, status, observed, limit, message, samples,
        guardrail). Saving a stage again replaces that stage's checks, so a retried task converges."""
        now = _now()
        rows = [{"run_id": run_id, "stage": check["stage"], "name": check["name"][:255], "status": check["status"],
                 "observed": check["observed"], "limit": check["limit"], "message": check["message"],
                 "samples": [str(sample) for sample in check.get("samples", ())], "guardrail": bool(check["guardrail"]),
                 "recorded_at": now} for check in checks]
        stages = sorted({row["stage"] for row in rows})
        with self._transaction(f"record the checks of run {run_id}") as session:
            session.execute(delete(CheckRow).where(CheckRow.run_id == run_id, CheckRow.stage.in_(stages)))
            if rows:
                session.execute(insert(CheckRow), rows)

    def checks(self, run_id: str) -> list[dict[str, Any]]:
        """The checks run `run_id` recorded, in the order they were recorded."""
        query = select(CheckRow).where(CheckRow.run_id == run_id).order_by(CheckRow.id)
        with self._sessions() as session:
            return [{"stage": row.stage, "name": row.name, "status": row.status, "observed": row.observed,
                     "limit": row.limit, "message": row.message, "samples": tuple(row.samples),
                     "guardrail": row.guardrail} for row in session.scalars(query)]

    # --- watermarks ---------------------------------------------------------------------------------------

    def watermark(self, sobject: str) -> Watermark | None:
        """Where the next incremental pull of `sobject` resumes; None when it has never been pulled."""
        with self._sessions() as session:
            row = session.get(WatermarkRow, sobject)
            return None if row is None else self._watermark(row)

    @staticmethod
    def _watermark(row: WatermarkRow) -> Watermark:
        return Watermark(sobject=row.sobject, cursor_field=row.cursor_field, value=row.value,
                         history_start=row.history_start, updated_at=row.updated_at, run_id=row.run_id,
                         deletions_value=row.deletions_value, reconciled_at=row.reconciled_at)

    def set_watermark(self, sobject: str, cursor_field: str, value: datetime, history_start: datetime,
                      run_id: str, *, deletions_value: datetime | None = None,
                      reconciled_at: datetime | None = None) -> None:
        """Moves (or first sets) the watermark of `sobject`, committed when this returns.

        Call it only after the rows up to `value` (and the deletions up to `deletions_value`) are staged
        durably: the watermark is a promise that nothing before it needs pulling again. `deletions_value`
        and `reconciled_at` left None keep what is stored.
        """
        values = {
            "sobject": sobject,
            "cursor_field": cursor_field,
            "value": as_utc(value, f"the watermark of {sobject}"),
            "history_start": as_utc(history_start, f"the history start of {sobject}"),
            "updated_at": _now(),
            "run_id": run_id,
            "deletions_value": _optional_utc(deletions_value, f"the deletions watermark of {sobject}"),
            "reconciled_at": _optional_utc(reconciled_at, f"the reconciliation time of {sobject}"),
        }
        kept = ("deletions_value", "reconciled_at")
        with self._transaction(f"set the watermark of {sobject} for run {run_id}") as session:
            statement = self._insert(WatermarkRow)
            update = {name: statement.excluded[name] for name in values if name != "sobject" and name not in kept}
            update |= {name: func.coalesce(statement.excluded[name], getattr(WatermarkRow, name)) for name in kept}
            session.execute(statement.on_conflict_do_update(index_elements=[WatermarkRow.sobject], set_=update),
                            values)

    def clear_watermarks(self, sobjects: list[str] | None = None) -> None:
        """Forgets watermarks, so the next pull starts from history_start: all of them when `sobjects` is
        None, those named otherwise (an empty list clears nothing)."""
        with self._transaction() as session:
            if sobjects is None:
                session.execute(delete(WatermarkRow))
                return
            for chunk in _chunks(sobjects):
                session.execute(delete(WatermarkRow).where(WatermarkRow.sobject.in_(chunk)))

    # --- quarantine ---------------------------------------------------------------------------------------

    def quarantine(self, records: list[QuarantinedRecord]) -> int:
        """Keeps records that could not be staged, and returns how many distinct records were written.

        A record already quarantined for the same reason (same object, same Id, or same raw values when
        it has no Id) is refreshed, not added again: its raw values and run id become this run's, and
        `first_seen_at` stays.
        """
        now = _now()
        rows: dict[str, dict[str, Any]] = {}
        for record in records:
            _check_json(record.raw, f"the raw values of quarantined {record.sobject} {record.record_id}")
            key = _dedupe_key(record)
            rows[key] = {"dedupe_key": key, "sobject": record.sobject, "record_id": record.record_id,
                         "reason": record.reason, "raw": record.raw, "run_id": record.run_id,
                         "first_seen_at": now, "last_seen_at": now}
        if not rows:
            return 0
        with self._transaction("quarantine records") as session:
            statement = self._insert(QuarantineRow)
            upsert = statement.on_conflict_do_update(
                index_elements=[QuarantineRow.dedupe_key],
                set_={name: statement.excluded[name] for name in ("raw", "run_id", "last_seen_at")},
            )
            batch = list(rows.values())
            for start in range(0, len(batch), _CHUNK):
                session.execute(upsert, batch[start:start + _CHUNK])
        return len(rows)

    def quarantined(self, sobject: str | None = None, run_id: str | None = None, *,
                    limit: int | None = None) -> list[QuarantinedRecord]:
        """What is in quarantine now, optionally for one object and/or the run that last saw it (the first
        `limit` records, by Id, when given)."""
        query = select(QuarantineRow).order_by(QuarantineRow.sobject, QuarantineRow.record_id.asc().nulls_last(),
                                               QuarantineRow.id)
        if limit is not None:
            query = query.limit(limit)
        if sobject is not None:
            query = query.where(QuarantineRow.sobject == sobject)
        if run_id is not None:
            query = query.where(QuarantineRow.run_id == run_id)
        with self._sessions() as session:
            return [QuarantinedRecord(sobject=row.sobject, record_id=row.record_id, reason=row.reason,
                                      raw=row.raw, run_id=row.run_id, first_seen_at=row.first_seen_at,
                                      last_seen_at=row.last_seen_at)
                    for row in session.scalars(query)]

    def quarantine_counts(self, *, seen_since: datetime | None = None) -> dict[str, dict[str, int]]:
        """Records in quarantine now, per object and reason: {sobject: {reason: count}}; with `seen_since`,
        only those a pull saw at or after it (older ones would have left staging by age anyway)."""
        query = (select(QuarantineRow.sobject, QuarantineRow.reason, func.count())
                 .group_by(QuarantineRow.sobject, QuarantineRow.reason))
        if seen_since is not None:
            query = query.where(QuarantineRow.last_seen_at >= as_utc(seen_since, "seen_since"))
        counts: dict[str, dict[str, int]] = {}
        with self._sessions() as session:
            for sobject, reason, count in session.execute(query):
                counts.setdefault(sobject, {})[reason] = int(count)
        return counts

    def release_quarantine(self, sobject: str, record_ids: list[str]) -> None:
        """Takes records out of quarantine (for every reason) because they have now arrived clean."""
        with self._transaction() as session:
            for chunk in _chunks(record_ids):
                session.execute(delete(QuarantineRow).where(QuarantineRow.sobject == sobject,
                                                            QuarantineRow.record_id.in_(chunk)))

    # --- pull statistics ----------------------------------------------------------------------------------

    def record_pull(self, stats: PullStats) -> None:
        """Records what a run pulled for one object; recording the same (run, object) again replaces it."""
        if stats.mode not in PULL_MODES:
            raise StateError(f"pull mode of {stats.sobject} in run {stats.run_id} must be one of {PULL_MODES}, "
                             f"not {stats.mode!r}")
        values = {
            "run_id": stats.run_id, "sobject": stats.sobject, "mode": stats.mode, "rows": stats.rows,
            "deleted": stats.deleted, "quarantined": stats.quarantined, "held": stats.held, "purged": stats.purged,
            "pruned": stats.pruned,
            "api_calls": stats.api_calls,
            "seconds": stats.seconds,
            "watermark_from": _optional_utc(stats.watermark_from, f"watermark_from of {stats.sobject}"),
            "watermark_to": _optional_utc(stats.watermark_to, f"watermark_to of {stats.sobject}"),
            "recorded_at": _now(),
        }
        with self._transaction(f"record the pull of {stats.sobject} for run {stats.run_id}") as session:
            statement = self._insert(PullStatsRow)
            session.execute(statement.on_conflict_do_update(
                index_elements=[PullStatsRow.run_id, PullStatsRow.sobject],
                set_={name: statement.excluded[name] for name in values if name not in ("run_id", "sobject")},
            ), values)

    def pruned_since(self, moment: datetime) -> dict[str, int]:
        """Rows each object's pulls pruned by age (the history window) after `moment`."""
        query = (select(PullStatsRow.sobject, func.sum(PullStatsRow.pruned))
                 .where(PullStatsRow.recorded_at > as_utc(moment, "moment")).group_by(PullStatsRow.sobject))
        with self._sessions() as session:
            return {sobject: int(total or 0) for sobject, total in session.execute(query)}

    def pull_stats(self, run_id: str) -> list[PullStats]:
        """What run `run_id` pulled, one entry per object, by object name."""
        query = select(PullStatsRow).where(PullStatsRow.run_id == run_id).order_by(PullStatsRow.sobject)
        with self._sessions() as session:
            return [PullStats(run_id=row.run_id, sobject=row.sobject, mode=row.mode,  # type: ignore[arg-type]
                              rows=row.rows, deleted=row.deleted, quarantined=row.quarantined,
                              api_calls=row.api_calls, seconds=row.seconds, watermark_from=row.watermark_from,
                              watermark_to=row.watermark_to, held=row.held, purged=row.purged,
                              pruned=row.pruned)
                    for row in session.scalars(query)]

    # --- assignments ---------------------------------------------------------------------------------------

    def save_assignments(self, run_id: str, as_of: datetime, catalog_version: str, assignments: pd.DataFrame) -> int:
        """Stores a run's assignments (index: user Id; columns persona, score, confidence, runner_up,
        runner_up_score, reason). Saving the same run again replaces its rows, so a rerun converges."""
        as_of = as_utc(as_of, "the as-of of assignments")
        rows = [
            {"run_id": run_id, "user_id": user_id, "persona": row.persona, "score": float(row.score),
             "confidence": float(row.confidence), "runner_up": _optional_text(row.runner_up),
             "runner_up_score": None if pd.isna(row.runner_up_score) else float(row.runner_up_score),
             "reason": row.reason, "catalog_version": catalog_version, "as_of": as_of}
            for user_id, row in zip(assignments.index, assignments.itertuples(index=False))
        ]
        with self._transaction(f"save the assignments of run {run_id}") as session:
            session.execute(delete(AssignmentRow).where(AssignmentRow.run_id == run_id))
            for start in range(0, len(rows), _CHUNK):
                session.execute(insert(AssignmentRow), rows[start:start + _CHUNK])
        return len(rows)

    def assignments(self, run_id: str) -> pd.DataFrame:
        """A run's assignments, indexed by user Id (empty when the run stored none). Read as plain rows, not
        ORM objects: a large org's 20,000 rows in a tenth of the time."""
        columns = [AssignmentRow.user_id, *(getattr(AssignmentRow, name) for name in _ASSIGNMENT_COLUMNS)]
        query = select(*columns).where(AssignmentRow.run_id == run_id).order_by(AssignmentRow.user_id)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return pd.DataFrame.from_records(rows, columns=["user_id", *_ASSIGNMENT_COLUMNS]).set_index("user_id")

    def latest_assignments(self, *, before: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """The assignments of the latest run that stored some (with an as-of before `before`, or at or before
        `until`, if given).

        This is every user's current persona, which stability keeps unless a new one clearly wins.
        """
        query = (select(AssignmentRow.run_id, AssignmentRow.as_of).join(RunRow, RunRow.id == AssignmentRow.run_id)
                 .where(RunRow.status != ROLLED_BACK))
        if before is not None:
            query = query.where(AssignmentRow.as_of < as_utc(before, "before"))
        if until is not None:
            query = query.where(AssignmentRow.as_of <= as_utc(until, "until"))
        query = query.order_by(AssignmentRow.as_of.desc(), RunRow.started_at.desc()).limit(1)
        with self._sessions() as session:
            latest = session.execute(query).first()
        return self.assignments(latest.run_id) if latest else _assignment_frame([])

    # --- persona history ---------------------------------------------------------------------------------

    def newest_as_of(self, *, other_than: str | None = None) -> datetime | None:
        """The newest as-of of any stored assignments (of runs not rolled back, other than `other_than`)."""
        query = (select(func.max(AssignmentRow.as_of)).join(RunRow, RunRow.id == AssignmentRow.run_id)
                 .where(RunRow.status != ROLLED_BACK))
        if other_than is not None:
            query = query.where(AssignmentRow.run_id != other_than)
        with self._sessions() as session:
            newest = session.execute(query).scalar()
        return None if newest is None else newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest

    def record_history(self, run_id: str, as_of: datetime, catalog_version: str, assignments: pd.DataFrame) -> int:
        """Extends each user's persona history with a run's assignments (index: user Id; columns persona,
        score, confidence, reason): a user whose persona differs from their open row gets that row closed
        at `as_of` and a new one opened (a rerun of the same as-of corrects the row it opened); a user
        with none gets one. The same persona again changes nothing, so a rerun adds no row.

        A run for an as-of before the newest stored one (a backfill of the past) is threaded into the
        story where it belongs: the history from `as_of` on is replayed from the stored assignments
        (`replay_history`). Returns the rows opened or corrected."""
        as_of = as_utc(as_of, "the as-of of the history")
        with self.lock(_HISTORY_LOCK, purpose=f"record the persona history of run {run_id}", wait_seconds=600):
            newest = self.newest_as_of(other_than=run_id)
            if newest is not None and as_of < newest:
                return self._replay_history(as_of)
            return self._append_history(run_id, as_of, catalog_version, assignments)

    def _append_history(self, run_id: str, as_of: datetime, catalog_version: str, assignments: pd.DataFrame) -> int:
        with self._transaction(f"record the persona history of run {run_id}") as session:
            open_rows = {row.user_id: row for row in session.scalars(
                select(PersonaHistoryRow).where(PersonaHistoryRow.valid_to.is_(None)))}
            opened = []
            for user_id, row in assignments.iterrows():
                current = open_rows.get(str(user_id))
                if current is not None and current.persona == row.persona:
                    continue
                if current is not None and current.valid_from >= as_of:  # the same as-of again: correct it
                    current.persona, current.score, current.confidence = row.persona, float(row.score), \
                        float(row.confidence)
                    current.reason, current.catalog_version, current.run_id = row.reason, catalog_version, run_id
                    opened.append(None)
                    continue
                if current is not None:
                    current.valid_to = as_of
                opened.append(_history_row(str(user_id), row, catalog_version, as_of, run_id))
            new_rows = [row for row in opened if row is not None]
            if new_rows:
                session.execute(insert(PersonaHistoryRow), new_rows)
        return len(opened)

    def replay_history(self, *, since: datetime) -> int:
        """Rebuilds the persona history from `since` on out of the stored assignments: the rows that start at
        or after it go, the rows they closed are open again, then every as-of from `since` on is applied in
        order (the latest run of each as-of, rolled-back runs left out), as `record_history` would have.

        The history is thus the same whatever order the as-ofs were computed in: a backfill of past dates
        done after the nightly runs, or interrupted and resumed, tells the story an uninterrupted run in
        date order tells. Returns the rows opened."""
        with self.lock(_HISTORY_LOCK, purpose="replay the persona history", wait_seconds=600):
            return self._replay_history(as_utc(since, "the start of the history to replay"))

    def _replay_history(self, since: datetime) -> int:
        """`replay_history`, the history lock held (so no run records history meanwhile)."""
        query = (select(AssignmentRow.run_id, AssignmentRow.as_of, RunRow.started_at)
                 .join(RunRow, RunRow.id == AssignmentRow.run_id)
                 .where(RunRow.status != ROLLED_BACK, AssignmentRow.as_of >= since).distinct()
                 .order_by(AssignmentRow.as_of, RunRow.started_at))
        with self._sessions() as session:
            latest_per_as_of = {as_of: run_id for run_id, as_of, _started in session.execute(query)}
        stored = [(run_id, as_utc(as_of, "an as-of"), self.assignments(run_id))
                  for as_of, run_id in sorted(latest_per_as_of.items())]
        with self._transaction(f"replay the persona history from {since.isoformat()}") as session:
            session.execute(delete(PersonaHistoryRow).where(PersonaHistoryRow.valid_from >= since))
            session.execute(update(PersonaHistoryRow).where(PersonaHistoryRow.valid_to >= since)
                            .values(valid_to=None))
            open_rows: dict[str, Any] = {row.user_id: row for row in session.scalars(
                select(PersonaHistoryRow).where(PersonaHistoryRow.valid_to.is_(None)))}
            opened: list[dict[str, Any]] = []
            for run_id, as_of, assignments in stored:
                for user_id, row in zip(assignments.index, assignments.itertuples(index=False)):
                    current = open_rows.get(str(user_id))
                    held = None if current is None else current["persona"] if isinstance(current, dict) \
                        else current.persona
                    if held == row.persona:
                        continue
                    if isinstance(current, dict):
                        current["valid_to"] = as_of
                    elif current is not None:
                        current.valid_to = as_of
                    open_rows[str(user_id)] = _history_row(str(user_id), row, row.catalog_version, as_of, run_id)
                    opened.append(open_rows[str(user_id)])
            for start in range(0, len(opened), _CHUNK):
                session.execute(insert(PersonaHistoryRow), opened[start:start + _CHUNK])
        return len(opened)

    def history(self, user_id: str) -> list[dict[str, Any]]:
        """A user's persona history, oldest first (`user_id` in its 15- or 18-character form)."""
        query = (select(PersonaHistoryRow).where(func.substr(PersonaHistoryRow.user_id, 1, 15) == user_id[:15])
                 .order_by(PersonaHistoryRow.valid_from, PersonaHistoryRow.id))
        with self._sessions() as session:
            return [{"persona": row.persona, "score": row.score, "confidence": row.confidence, "reason": row.reason,
                     "catalog_version": row.catalog_version, "valid_from": row.valid_from, "valid_to": row.valid_to,
                     "run_id": row.run_id} for row in session.scalars(query)]

    # --- the sync log: every planned write and its outcome ------------------------------------------------

    def plan_writes(self, run_id: str, target: str, writes: Sequence[dict[str, Any]]) -> None:
        """Records a run's plan for one target before the first write (dicts with record_id, operation,
        old_values, new_values, status 'planned' or 'conflict'). Planning again replaces the plan."""
        now = _now()
        rows = [{"run_id": run_id, "target": target, "record_id": write["record_id"], "operation": write["operation"],
                 "old_values": write["old_values"], "new_values": write["new_values"], "status": write["status"],
                 "error_code": None, "message": write.get("message"), "attempts": 0, "updated_at": now}
                for write in writes]
        with self._transaction(f"record the plan of run {run_id} for {target}") as session:
            session.execute(delete(SyncLogRow).where(SyncLogRow.run_id == run_id, SyncLogRow.target == target))
            for start in range(0, len(rows), _CHUNK):
                session.execute(insert(SyncLogRow), rows[start:start + _CHUNK])

    def mark_writes(self, run_id: str, target: str, outcomes: Sequence[dict[str, Any]]) -> None:
        """Marks planned writes done or failed as their calls return (dicts with record_id, success,
        status_code, message, attempts). Outcomes alike are marked together, a few hundred per statement."""
        if not outcomes:
            return
        now = _now()
        alike: dict[tuple, list[str]] = {}
        for outcome in outcomes:
            key = ("done" if outcome["success"] else "failed", outcome.get("status_code"), outcome.get("message"),
                   outcome.get("attempts", 1))
            alike.setdefault(key, []).append(outcome["record_id"])
        with self._transaction(f"mark the writes of run {run_id} to {target}") as session:
            for (status, code, message, attempts), record_ids in alike.items():
                for chunk in _chunks(record_ids):
                    session.execute(update(SyncLogRow).where(
                        SyncLogRow.run_id == run_id, SyncLogRow.target == target, SyncLogRow.record_id.in_(chunk))
                        .values(status=status, error_code=code, message=message, attempts=attempts, updated_at=now))

    def sync_log(self, run_id: str, target: str | None = None) -> list[dict[str, Any]]:
        """A run's planned writes and their outcomes, in plan order."""
        query = select(SyncLogRow).where(SyncLogRow.run_id == run_id).order_by(SyncLogRow.id)
        if target is not None:
            query = query.where(SyncLogRow.target == target)
        with self._sessions() as session:
            return [{"target": row.target, "record_id": row.record_id, "operation": row.operation,
                     "old_values": row.old_values, "new_values": row.new_values, "status": row.status,
                     "error_code": row.error_code, "message": row.message, "attempts": row.attempts}
                    for row in session.scalars(query)]

    def last_written(self, target: str) -> dict[str, dict[str, Any]]:
        """What persona-sync last wrote to each field of each record of `target` (done writes, newest last,
        field by field: a write that changed only the score leaves the persona it wrote before as ours).
        A record holding something else now was edited by someone else since."""
        query = (select(SyncLogRow.record_id, SyncLogRow.new_values)
                 .where(SyncLogRow.target == target, SyncLogRow.status == "done").order_by(SyncLogRow.id))
        written: dict[str, dict[str, Any]] = {}
        with self._sessions() as session:
            for record_id, values in session.execute(query):
                written.setdefault(record_id, {}).update(values)
        return written

    def unsettled_writes(self, target: str) -> list[dict[str, Any]]:
        """Writes still 'planned' (any run): a run died after planning them, perhaps after the org took
        them but before they were marked."""
        query = (select(SyncLogRow.run_id, SyncLogRow.record_id, SyncLogRow.new_values)
                 .where(SyncLogRow.target == target, SyncLogRow.status == "planned").order_by(SyncLogRow.id))
        with self._sessions() as session:
            return [{"run_id": run_id, "record_id": record_id, "new_values": values}
                    for run_id, record_id, values in session.execute(query)]

    # --- the grant ledger ---------------------------------------------------------------------------------

    def grants(self, target: str, *, status: str | None = "active") -> set[tuple[str, str]]:
        """The (member, role) pairs of `target` the ledger holds with `status` (None: any)."""
        query = select(GrantRow.member, GrantRow.role).where(GrantRow.target == target)
        if status is not None:
            query = query.where(GrantRow.status == status)
        with self._sessions() as session:
            return {(member, role) for member, role in session.execute(query)}

    def grants_target_names(self) -> set[str]:
        """The targets the grant ledger knows."""
        with self._sessions() as session:
            return set(session.scalars(select(GrantRow.target).distinct()))

    def begin_grants(self, run_id: str, target: str, grants: Sequence[tuple[str, str]],
                     revokes: Sequence[tuple[str, str]]) -> None:
        """Records, before the target's transaction, the grants a run is about to insert ('granting') and
        the active grants it is about to delete ('revoking')."""
        now = _now()
        with self._transaction(f"record the grants of run {run_id}") as session:
            if grants:
                session.execute(insert(GrantRow), [
                    {"target": target, "member": member, "role": role, "status": "granting",
                     "granted_run_id": run_id, "granted_at": now} for member, role in grants])
            for chunk in _chunks(list(revokes)):
                session.execute(update(GrantRow).where(
                    GrantRow.target == target, tuple_(GrantRow.member, GrantRow.role).in_(chunk),
                    GrantRow.status == "active").values(status="revoking", revoked_run_id=run_id, revoked_at=now))

    def abandon_grants(self, run_id: str, target: str) -> None:
        """Forgets what run `run_id` was about to do in `target`, whose transaction failed (nothing of it
        was applied): its grants being given go, its revokes are active grants again."""
        with self._transaction(f"abandon the grants of run {run_id}") as session:
            session.execute(delete(GrantRow).where(GrantRow.target == target, GrantRow.granted_run_id == run_id,
                                                   GrantRow.status == "granting"))
            session.execute(update(GrantRow).where(GrantRow.target == target, GrantRow.revoked_run_id == run_id,
                                                   GrantRow.status == "revoking")
                            .values(status="active", revoked_run_id=None, revoked_at=None))

    def settle_grants(self, target: str, present: set[tuple[str, str]]) -> None:
        """Brings the ledger in line with what `target` holds (`present`): a grant being given is active if its
        row is there (else it never happened and goes); a revoke is done if the row is gone (else the grant
        stays active); an active grant whose row someone removed is revoked (by nobody of ours)."""
        now = _now()
        with self._transaction(f"settle the grant ledger of {target}") as session:
            rows = session.execute(select(GrantRow.id, GrantRow.member, GrantRow.role, GrantRow.status)
                                   .where(GrantRow.target == target, GrantRow.status != "revoked")).all()
            never = [row.id for row in rows if row.status == "granting" and (row.member, row.role) not in present]
            given = [row.id for row in rows if row.status == "granting" and (row.member, row.role) in present]
            undone = [row.id for row in rows if row.status == "revoking" and (row.member, row.role) in present]
            revoked = [row.id for row in rows if row.status == "revoking" and (row.member, row.role) not in present]
            removed = [row.id for row in rows if row.status == "active" and (row.member, row.role) not in present]
            for chunk in _chunks(never):
                session.execute(delete(GrantRow).where(GrantRow.id.in_(chunk)))
            for ids, values in ((given, {"status": "active"}),
                                (undone, {"status": "active", "revoked_run_id": None, "revoked_at": None}),
                                (revoked, {"status": "revoked"}),
                                (removed, {"status": "revoked", "revoked_at": now})):
                for chunk in _chunks(ids):
                    session.execute(update(GrantRow).where(GrantRow.id.in_(chunk)).values(**values))

    # --- rollback ---------------------------------------------------------------------------------------

    def newest_writing_run(self) -> str | None:
        """The newest run (not a rollback, not rolled back) that wrote to a target or stored assignments: the
        only one a rollback may undo."""
        wrote = select(SyncLogRow.run_id).where(SyncLogRow.status == "done").union(
            select(GrantRow.granted_run_id), select(GrantRow.revoked_run_id).where(GrantRow.revoked_run_id.isnot(None)),
            select(AssignmentRow.run_id)).subquery()
        query = (select(RunRow.id).where(RunRow.id.in_(select(wrote.c[0])), RunRow.flow != "rollback",
                                         RunRow.status != ROLLED_BACK)
                 .order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(1))
        with self._sessions() as session:
            return session.execute(query).scalar()

    def grant_count(self, run_id: str) -> int:
        """How many grant ledger rows run `run_id` granted or revoked (in any target)."""
        query = select(func.count()).select_from(GrantRow).where(
            (GrantRow.granted_run_id == run_id) | (GrantRow.revoked_run_id == run_id))
        with self._sessions() as session:
            return int(session.execute(query).scalar() or 0)

    def grants_of_run(self, target: str, run_id: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """(pairs run `run_id` granted that are still active, pairs it revoked) in `target`."""
        with self._sessions() as session:
            granted = {(member, role) for member, role in session.execute(
                select(GrantRow.member, GrantRow.role).where(GrantRow.target == target, GrantRow.status == "active",
                                                             GrantRow.granted_run_id == run_id))}
            revoked = {(member, role) for member, role in session.execute(
                select(GrantRow.member, GrantRow.role).where(GrantRow.target == target, GrantRow.status == "revoked",
                                                             GrantRow.revoked_run_id == run_id))}
        return granted, revoked

    def roll_back_run(self, run_id: str) -> None:
        """Marks a run rolled back: its assignments no longer count as anyone's current persona, and the
        persona history is replayed from its as-of without it (the rows it opened go, wherever in the
        story they were: a backfilled date sits between other runs' rows)."""
        with self._sessions() as session:
            as_of = session.execute(select(func.min(AssignmentRow.as_of)).where(AssignmentRow.run_id == run_id)).scalar()
        with self._transaction(f"roll back run {run_id}") as session:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(status=ROLLED_BACK))
        if as_of is not None:
            self.replay_history(since=as_utc(as_of, "the as-of of the run rolled back"))

    # --- the org this state belongs to --------------------------------------------------------------------

    def bind_org(self, org_id: str, instance_url: str) -> None:
        """Records that this state belongs to `org_id`; refuses (OrgMismatchError) if it belongs to another.

        Watermarks, staging and assignments of one org applied to another would skip or mix records, so a
        run against a different org stops before it reads anything.
        """
        org_id = org_id[:15]
        with self._transaction(f"bind the state to org {org_id}") as session:
            bound = session.scalars(select(OrgRow)).first()
            if bound is None:
                session.add(OrgRow(org_id=org_id, instance_url=instance_url, bound_at=_now()))
                return
            if bound.org_id != org_id:
                raise OrgMismatchError(
                    f"this state database ({self._where()}) belongs to org {bound.org_id} ({bound.instance_url}, "
                    f"since {bound.bound_at:%Y-%m-%d}), but the configured login reached org {org_id} "
                    f"({instance_url}). Each org needs its own state and staging: set PERSONA_SYNC_HOME (or "
                    "PERSONA_SYNC_STATE_DATABASE_URL and PERSONA_SYNC_STAGING_DIR) for this org, or check "
                    "PERSONA_SYNC_SALESFORCE_LOGIN_URL")
            bound.instance_url = instance_url

    def bound_org(self) -> str | None:
        """The org id this state belongs to (None until a run has bound it)."""
        with self._sessions() as session:
            bound = session.scalars(select(OrgRow)).first()
            return None if bound is None else bound.org_id

    # --- locks --------------------------------------------------------------------------------------------

    @contextmanager
    def lock(self, name: str, *, purpose: str, wait_seconds: float = 0.0) -> Iterator[None]:
        """Holds the lock `name` for the block: one holder at a time, across processes and machines.

        Waits up to `wait_seconds` for a holder to finish, then raises LockedError saying who holds it
        since when. A holder that died is taken over: at once when it ran on this machine and its
        process is gone, else once its heartbeat (refreshed every 30 s while held) is 10 minutes old.
        """
        owner = str(uuid4())
        deadline = time.monotonic() + wait_seconds
        while not self._try_lock(name, owner, purpose):
            if time.monotonic() >= deadline:
                raise LockedError(self._lock_message(name, purpose, wait_seconds))
            time.sleep(_LOCK_POLL_SECONDS)
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._beat, args=(name, owner, stop), daemon=True,
                                     name=f"lock-{name}-heartbeat")
        heartbeat.start()
        try:
            yield
        finally:
            stop.set()
            heartbeat.join()
            with self._transaction(f"release the lock {name}") as session:
                session.execute(delete(LockRow).where(LockRow.name == name, LockRow.owner == owner))

    def _try_lock(self, name: str, owner: str, purpose: str) -> bool:
        """Takes the lock if it is free or its holder is gone. A takeover deletes exactly the dead holder's
        row (compare-and-swap on its owner), so of two processes taking over the same dead lock one wins."""
        now = _now()
        try:
            with self._transaction(f"take the lock {name}") as session:
                held = session.execute(select(LockRow.owner, LockRow.host, LockRow.pid, LockRow.purpose,
                                              LockRow.heartbeat_at).where(LockRow.name == name)).first()
                if held is not None:
                    if not _abandoned(held.host, held.pid, held.heartbeat_at, now):
                        return False
                    taken = session.execute(delete(LockRow).where(LockRow.name == name, LockRow.owner == held.owner))
                    if taken.rowcount != 1:
                        return False  # another process took it over first
                    log.warning("taking over the lock %r from %s (pid %d on %s), which stopped without releasing "
                                "it", name, held.purpose, held.pid, held.host)
                session.execute(insert(LockRow).values(name=name, owner=owner, host=socket.gethostname(),
                                                       pid=os.getpid(), purpose=purpose, acquired_at=now,
                                                       heartbeat_at=now))
        except StateError:  # another process inserted the row first
            return False
        except OperationalError as error:
            if "locked" not in str(error.orig):
                raise
            return False  # SQLite: another process wrote the lock row while this one was deciding
        return True

    def _beat(self, name: str, owner: str, stop: threading.Event) -> None:
        """Refreshes the lock's heartbeat while it is held. A failed refresh is logged and tried again at the
        next beat (the lock is only taken over after 10 minutes without one)."""
        while not stop.wait(_HEARTBEAT_SECONDS):
            try:
                with self._transaction(f"refresh the lock {name}") as session:
                    beaten = session.execute(update(LockRow).where(LockRow.name == name, LockRow.owner == owner)
                                             .values(heartbeat_at=_now()))
            except (StateError, SQLAlchemyError) as error:
                log.warning("could not refresh the heartbeat of the lock %r (%s); trying again in %.0f s", name,
                            error, _HEARTBEAT_SECONDS)
                continue
            if beaten.rowcount != 1:
                log.error("the lock %r was taken over by another process while this one held it: its heartbeat "
                          "was older than %s (a stalled process, or clocks far apart)", name, _STALE_LOCK)
                return

    def _lock_message(self, name: str, purpose: str, waited: float) -> str:
        with self._sessions() as session:
            held = session.get(LockRow, name)
        since = f"{held.acquired_at:%Y-%m-%d %H:%M:%S}" if held is not None else ""
        holder = (f"{held.purpose} (pid {held.pid} on {held.host}) has held it since {since} UTC"
                  if held is not None else "another process holds it")
        return (f"cannot {purpose}: {holder}{f', and it did not end within {waited:g} s' if waited else ''}. "
                f"Only one may run at a time against this state ({self._where()}); wait for it to finish, or "
                "set PERSONA_SYNC_PULL_LOCK_WAIT_SECONDS to wait for it")

    # --- plumbing -----------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, doing: str = "") -> Iterator[Session]:
        """A session committed on success. A foreign-key refusal (an unknown run id) becomes a StateError."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as error:
            raise StateError(f"could not {doing or 'write to the state database'} ({self._where()}): "
                             f"{str(error.orig).strip().splitlines()[0]}. A run id must come from start_run.") \
                from error

    def _insert(self, model: type[Any]) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT (both SQLite and PostgreSQL do)."""
        dialect: Any = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement: Insert = dialect.insert(model)
        return statement

    def _where(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _abandoned(host: str, pid: int, heartbeat_at: datetime, now: datetime) -> bool:
    """Whether a lock's holder is gone: its process has ended (this machine), or its heartbeat is stale."""
    if host == socket.gethostname() and not _process_alive(pid):
        return True
    return now - heartbeat_at > _STALE_LOCK


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _optional_utc(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else as_utc(value, what)


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _check_json(value: Any, what: str) -> None:
    """Refuses what JSON cannot hold here, naming it, rather than failing deep inside the flush."""
    try:
        dump_json(value)
    except (TypeError, ValueError) as error:
        raise StateError(f"{what} cannot be stored as JSON: {error}") from error


def _dedupe_key(record: QuarantinedRecord) -> str:
    """Identifies a quarantined record across reruns: its Id, or its raw values when it has no Id."""
    identity = record.record_id
    if identity is None:
        raw = json.dumps(record.raw, sort_keys=True, default=str)
        identity = "raw:" + hashlib.sha256(raw.encode()).hexdigest()
    return hashlib.sha256(json.dumps([record.sobject, identity, record.reason]).encode()).hexdigest()


_ASSIGNMENT_COLUMNS = ["persona", "score", "confidence", "runner_up", "runner_up_score", "reason",
                       "catalog_version", "as_of", "run_id"]


def _assignment_frame(rows: Any) -> pd.DataFrame:
    records = [{"user_id": row.user_id, **{column: getattr(row, column) for column in _ASSIGNMENT_COLUMNS}}
               for row in rows]
    frame = pd.DataFrame.from_records(records, columns=["user_id", *_ASSIGNMENT_COLUMNS])
    return frame.set_index("user_id")


def _history_row(user_id: str, row: Any, catalog_version: str, as_of: datetime, run_id: str) -> dict[str, Any]:
    """A new, open persona history row for one user's assignment (a pandas row or itertuples tuple)."""
    return {"user_id": user_id, "persona": row.persona, "score": float(row.score), "confidence": float(row.confidence),
            "reason": row.reason, "catalog_version": catalog_version, "valid_from": as_of, "valid_to": None,
            "run_id": run_id}


def _optional_text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _run_record(row: RunRow) -> RunRecord:
    return RunRecord(id=row.id, flow=row.flow, parameters=row.parameters, status=row.status,
                     started_at=row.started_at, finished_at=row.finished_at, counts=row.counts,
                     api_calls=row.api_calls, error=row.error, data_docs=row.data_docs)
