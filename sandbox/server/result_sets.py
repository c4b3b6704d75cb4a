"""Query results kept on disk, so large results are paged and streamed instead of built in memory.

A REST query with more than one page of rows, and every Bulk API 2.0 query job, is evaluated once into
a table of its own in `results.db` (beside the org database, which is attached to every connection
as `org`). Pages are then read by row number: cheap at any depth, stable while the org changes, and
repeatable, so a client that lost a download can fetch the same page again. This is how Salesforce
behaves too: a query locator or a job's results are a snapshot.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# How long a connection waits for the writer lock of results.db (see `connection`).
_WRITER_WAIT_SECONDS = 600


class ResultSets:
    """Result tables in `results.db`; each thread gets its own connection."""

    def __init__(self, path: Path, org_path: Path) -> None:
        self.path = Path(path)
        self.org_path = Path(org_path)
        self._local = threading.local()
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS _result_sets (name TEXT PRIMARY KEY, rows INTEGER NOT NULL, "
                       "created REAL NOT NULL, last_used REAL NOT NULL, description TEXT NOT NULL)")

    def connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # Result tables are written one at a time (SQLite has one writer), and materialising a large Bulk
            # job holds the lock for as long as the query runs: others wait, however long that takes.
            db = sqlite3.connect(self.path, timeout=_WRITER_WAIT_SECONDS, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # results can always be computed again
            db.execute("ATTACH DATABASE ? AS org", (str(self.org_path),))
            self._local.db = db
        return db

    def transaction(self) -> _ResultsTransaction:
        return _ResultsTransaction(self.connection())

    def materialise(self, name: str, sql: str, params: Sequence[object], description: str) -> int:
        """Evaluates `sql` into the table `name`, rows numbered 1.. in result order; returns the row count."""
        _check_name(name)
        with self.transaction() as db:
            now = time.time()
            # A write first: the writer lock is taken (waiting for it if need be) before anything is read, so
            # no other writer can commit between this transaction's first read and its first write.
            db.execute("INSERT OR REPLACE INTO _result_sets VALUES (?, 0, ?, ?, ?)", (name, now, now, description))
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute(f"CREATE TABLE {name} AS {sql}", list(params))
            rows = db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            db.execute("UPDATE _result_sets SET rows = ? WHERE name = ?", (rows, name))
        return rows

    def info(self, name: str) -> tuple[int, str] | None:
        """(row count, description) of a result table, or None when it does not exist (or expired)."""
        _check_name(name)
        row = self.connection().execute("SELECT rows, description FROM _result_sets WHERE name = ?", (name,)).fetchone()
        return None if row is None else (row[0], row[1])

    def page(self, name: str, after: int, count: int) -> sqlite3.Cursor:
        """A cursor over rows `after+1 .. after+count` of a result table."""
        _check_name(name)
        db = self.connection()
        db.execute("UPDATE _result_sets SET last_used = ? WHERE name = ?", (time.time(), name))
        return db.execute(f"SELECT * FROM {name} WHERE rowid > ? AND rowid <= ? ORDER BY rowid", (after, after + count))

    def drop(self, name: str) -> None:
        _check_name(name)
        with self.transaction() as db:
            db.execute("DELETE FROM _result_sets WHERE name = ?", (name,))  # a write first (see _ResultsTransaction)
            db.execute(f"DROP TABLE IF EXISTS {name}")

    def expire(self, prefix: str, idle_seconds: float) -> int:
        """Drops result tables named `prefix...` unused for `idle_seconds`; returns how many."""
        cutoff = time.time() - idle_seconds
        names = [row[0] for row in self.connection().execute(
            "SELECT name FROM _result_sets WHERE name LIKE ? AND last_used < ?", (prefix + "%", cutoff))]
        for name in names:
            self.drop(name)
        return len(names)


class _ResultsTransaction:
    """A deferred transaction (BEGIN): it takes results.db's writer lock when it first writes, and never the
    attached org's. BEGIN IMMEDIATE would lock every attached database for the whole transaction, so
    making a large result would hold off every API call that writes the org (sessions, the API counter).
    Write before reading in it: a transaction that read first cannot wait for the writer lock (SQLite
    answers "database is locked" at once when another writer committed since the read)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN")
        return self.db

    def __exit__(self, error_type: object, error: object, traceback: object) -> None:
        self.db.execute("COMMIT" if error_type is None else "ROLLBACK")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"bad result table name {name!r}")
