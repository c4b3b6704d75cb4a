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

from sandbox.store import Transaction

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

    def transaction(self) -> Transaction:
        return Transaction(self.connection())

    def materialise(self, name: str, sql: str, params: Sequence[object], description: str) -> int:
        """Evaluates `sql` into the table `name`, rows numbered 1.. in result order; returns the row count."""
        _check_name(name)
        with self.transaction() as db:
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute(f"CREATE TABLE {name} AS {sql}", list(params))
            rows = db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            now = time.time()
            db.execute("INSERT OR REPLACE INTO _result_sets VALUES (?, ?, ?, ?, ?)", (name, rows, now, now, description))
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
            db.execute(f"DROP TABLE IF EXISTS {name}")
            db.execute("DELETE FROM _result_sets WHERE name = ?", (name,))

    def expire(self, prefix: str, idle_seconds: float) -> int:
        """Drops result tables named `prefix...` unused for `idle_seconds`; returns how many."""
        cutoff = time.time() - idle_seconds
        names = [row[0] for row in self.connection().execute(
            "SELECT name FROM _result_sets WHERE name LIKE ? AND last_used < ?", (prefix + "%", cutoff))]
        for name in names:
            self.drop(name)
        return len(names)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"bad result table name {name!r}")
