"""The sandbox org's database: one SQLite file holding every record, the schema and the server's state.

Why SQLite: millions of rows fit on disk rather than in memory, writes survive restarts, and queries
stream from a cursor. One table per sObject, named after it, one column per field (see
`sandbox.schema` for how values are stored). Tables whose names start with `_` are the sandbox's own
(settings, id counters, fields an export added, sessions, jobs).

Each thread gets its own connection (SQLite connections must not cross threads); WAL mode lets the
server read while a Bulk job writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from sandbox.ids import make_id, make_ids
from sandbox.schema import FieldSchema, SObjectSchema, standard_objects

# Bump when the standard schema or the storage layout changes: an older org file is then refused
# with a clear message instead of failing half-way through a query.
LAYOUT_VERSION = "1"

# Columns that get an index: what incremental pulls filter and order on, and the usual lookups.
_INDEXED = ("SystemModstamp", "CreatedDate", "LoginTime", "OwnerId", "UserId", "CreatedById")


class StoreError(RuntimeError):
    """The org database cannot be used as it is (missing, from another version, or corrupt)."""


def quote(identifier: str) -> str:
    """An SQL identifier, quoted (object and field names come from our schema, never raw from a client)."""
    return '"' + identifier.replace('"', '""') + '"'


class OrgStore:
    """One sandbox org on disk. Safe to share between threads; each thread uses its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema: dict[str, SObjectSchema] | None = None

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, settings: dict[str, str]) -> "OrgStore":
        """A new, empty org at `path` (which must not exist), with its tables and `settings` saved."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} already exists; remove it or choose another data directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        with store.transaction() as db:
            db.execute("CREATE TABLE _meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE _id_counters (key_prefix TEXT PRIMARY KEY, next INTEGER NOT NULL)")
            db.execute("CREATE TABLE _extra_fields (object TEXT NOT NULL, position INTEGER NOT NULL, "
                       "definition TEXT NOT NULL, PRIMARY KEY (object, position))")
            for sobject in standard_objects().values():
                db.execute(_create_table_sql(sobject))
            db.executemany("INSERT INTO _meta VALUES (?, ?)",
                           [("layout_version", LAYOUT_VERSION), *sorted(settings.items())])
        return store

    @classmethod
    def open(cls, path: Path) -> "OrgStore":
        """The existing org at `path`; refuses a file made by another layout version."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"no sandbox org at {path}; generate one first (persona-sync sandbox start)")
        store = cls(path)
        try:
            version = store.setting("layout_version")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{path} is not a sandbox org database: {error}") from error
        if version != LAYOUT_VERSION:
            raise StoreError(
                f"{path} was made by another version of the sandbox (layout {version}, this one reads "
                f"{LAYOUT_VERSION}); delete it and start the sandbox again to regenerate the org"
            )
        return store

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the org database."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=OFF")
            db.execute("PRAGMA temp_store=FILE")
            db.execute("PRAGMA cache_size=-65536")
            self._local.db = db
        return db

    def transaction(self) -> "Transaction":
        """A context manager: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""
        return Transaction(self.connection())

    def close(self) -> None:
        """Closes this thread's connection (other threads close theirs when they end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- settings and schema ------------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        row = self.connection().execute("SELECT value FROM _meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def settings(self) -> dict[str, str]:
        return dict(self.connection().execute("SELECT key, value FROM _meta").fetchall())

    def set_setting(self, key: str, value: str) -> None:
        self.connection().execute("INSERT OR REPLACE INTO _meta VALUES (?, ?)", (key, value))

    @property
    def schema(self) -> dict[str, SObjectSchema]:
        """Every sObject of this org by API name: the standard ones plus fields an export added."""
        if self._schema is None:
            with self._schema_lock:
                if self._schema is None:
                    self._schema = self._load_schema()
        return self._schema

    def sobject(self, name: str) -> SObjectSchema | None:
        """The sObject called `name` (case-insensitive, as in the API), or None."""
        lowered = name.lower()
        for sobject in self.schema.values():
            if sobject.name.lower() == lowered:
                return sobject
        return None

    def add_fields(self, object_name: str, fields: Sequence[FieldSchema], db: sqlite3.Connection) -> None:
        """Adds `fields` to an object's table and schema, inside the caller's transaction `db`."""
        table = quote(object_name)
        start = db.execute("SELECT COUNT(*) FROM _extra_fields WHERE object = ?", (object_name,)).fetchone()[0]
        for offset, extra in enumerate(fields):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {quote(extra.name)} {extra.sqlite_type}")
            db.execute("INSERT INTO _extra_fields VALUES (?, ?, ?)",
                       (object_name, start + offset, json.dumps(asdict(extra))))
        self._schema = None

    def withhold(self, objects: Sequence[str], fields: Sequence[str], db: sqlite3.Connection) -> None:
        """Takes standard objects and fields (`Object.Field`) out of this org, inside the caller's transaction.

        Why: an org built from a partial export has no such object or field at all, and a client must
        see that as Salesforce shows it: the object missing from the global describe (a query of it fails
        with INVALID_TYPE), the field missing from its object's describe (INVALID_FIELD), not an empty
        table or a column of nulls. Their data is dropped; the names are kept in the settings
        (`absent_objects`, `absent_fields`, JSON lists), which the schema is read against.
        """
        known = standard_objects()
        for name in objects:
            if name not in known:
                raise StoreError(f"cannot withhold {name!r}: not a standard object of the sandbox")
        for qualified in fields:
            object_name, _, field_name = qualified.partition(".")
            if object_name not in known or known[object_name].field(field_name) is None or field_name == "Id":
                raise StoreError(f"cannot withhold {qualified!r}: name a standard field as Object.Field (not Id)")
        absent_objects = sorted({*self._absent("absent_objects"), *objects})
        absent_fields = sorted({*self._absent("absent_fields"), *fields})
        for name in objects:
            db.execute(f"DROP TABLE IF EXISTS {quote(name)}")
        for qualified in fields:
            object_name, _, field_name = qualified.partition(".")
            if object_name in absent_objects:
                continue
            for (index,) in db.execute("SELECT name FROM pragma_index_list(?)", (object_name,)).fetchall():
                columns = [row[0] for row in db.execute("SELECT name FROM pragma_index_info(?)", (index,))]
                if field_name in columns:
                    db.execute(f"DROP INDEX {quote(index)}")
            db.execute(f"ALTER TABLE {quote(object_name)} DROP COLUMN {quote(field_name)}")
        db.execute("INSERT OR REPLACE INTO _meta VALUES (?, ?)", ("absent_objects", json.dumps(absent_objects)))
        db.execute("INSERT OR REPLACE INTO _meta VALUES (?, ?)", ("absent_fields", json.dumps(absent_fields)))
        self._schema = None

    def _absent(self, key: str) -> list[str]:
        """The names a `withhold` saved under `key` (none for an org that withholds nothing)."""
        text = self.setting(key)
        return json.loads(text) if text else []

    def _load_schema(self) -> dict[str, SObjectSchema]:
        objects = standard_objects()
        extras: dict[str, list[FieldSchema]] = {}
        rows = self.connection().execute("SELECT object, definition FROM _extra_fields ORDER BY object, position")
        for object_name, definition in rows:
            attributes = json.loads(definition)
            attributes["reference_to"] = tuple(attributes["reference_to"])
            attributes["picklist_values"] = tuple(attributes["picklist_values"])
            extras.setdefault(object_name, []).append(FieldSchema(**attributes))
        for object_name, fields in extras.items():
            objects[object_name] = objects[object_name].with_fields(fields)
        absent_fields: dict[str, set[str]] = {}
        for qualified in self._absent("absent_fields"):
            object_name, _, field_name = qualified.partition(".")
            absent_fields.setdefault(object_name, set()).add(field_name)
        for object_name, names in absent_fields.items():
            objects[object_name] = objects[object_name].without_fields(names)
        for object_name in self._absent("absent_objects"):
            objects.pop(object_name, None)
        return objects

    # --- ids and rows -----------------------------------------------------------------------------

    def allocate_counters(self, key_prefix: str, count: int, db: sqlite3.Connection) -> int:
        """Reserves `count` id counters for `key_prefix` inside the caller's transaction; returns the first.

        Counters are per key prefix, not per object, because objects may share one (the history
        objects share 017) and ids must stay unique across them.
        """
        row = db.execute("SELECT next FROM _id_counters WHERE key_prefix = ?", (key_prefix,)).fetchone()
        start = row[0] if row else 1
        db.execute("INSERT OR REPLACE INTO _id_counters VALUES (?, ?)", (key_prefix, start + count))
        return start

    def new_ids(self, key_prefix: str, count: int, db: sqlite3.Connection) -> list[str]:
        """`count` fresh 18-character ids for `key_prefix`, inside the caller's transaction."""
        start = self.allocate_counters(key_prefix, count, db)
        if count > 1000:
            return list(make_ids(key_prefix, start, count))
        return [make_id(key_prefix, start + offset) for offset in range(count)]

    def insert_rows(self, object_name: str, columns: Sequence[str], rows: Iterable[Sequence[object]],
                    db: sqlite3.Connection) -> None:
        """Inserts stored-form rows (values in `columns` order) inside the caller's transaction."""
        column_list = ", ".join(quote(column) for column in columns)
        placeholders = ", ".join("?" for _ in columns)
        db.executemany(f"INSERT INTO {quote(object_name)} ({column_list}) VALUES ({placeholders})", rows)

    def create_indexes(self, db: sqlite3.Connection) -> None:
        """Creates the lookup indexes (after bulk loading, which is faster without them)."""
        for sobject in self.schema.values():
            for column in _INDEXED:
                if sobject.field(column) is not None:
                    db.execute(
                        f"CREATE INDEX IF NOT EXISTS {quote(f'ix_{sobject.name}_{column}')} "
                        f"ON {quote(sobject.name)} ({quote(column)}, Id)"
                    )

    def count(self, object_name: str) -> int:
        """Rows of an object, deleted ones included."""
        return self.connection().execute(f"SELECT COUNT(*) FROM {quote(object_name)}").fetchone()[0]


class Transaction:
    """BEGIN IMMEDIATE on enter; COMMIT on a clean exit, ROLLBACK when the block raised."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, error_type, error, traceback) -> None:
        self.db.execute("COMMIT" if error_type is None else "ROLLBACK")


def _create_table_sql(sobject: SObjectSchema) -> str:
    columns = []
    for f in sobject.fields:
        definition = f"{quote(f.name)} {f.sqlite_type}"
        if f.name == "Id":
            definition += " NOT NULL UNIQUE"
        elif f.name == "IsDeleted":
            definition += " NOT NULL DEFAULT 0"
        columns.append(definition)
    return f"CREATE TABLE {quote(sobject.name)} ({', '.join(columns)})"
