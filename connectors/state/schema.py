"""The state database's engine and schema: connecting, and migrating to the newest alembic revision.

The migrations ship inside the package (`connectors/state/migrations/`), and alembic is driven from
code, so no `alembic.ini` is needed at run time. To write the next revision (developers):

    .venv/bin/python -m connectors.state revision "add assignments"

which autogenerates `migrations/versions/<NNNN>_<slug>.py` from the models in `tables.py`.
"""

from __future__ import annotations

import json
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL

from connectors.state.errors import StateError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SUPPORTED_BACKENDS = ("sqlite", "postgresql")

# Any constant works: it only has to be the same for every process that migrates this database.
_MIGRATION_LOCK_KEY = 0x5057_5354  # "PSST"


def _json_value(value: Any) -> Any:
    """What JSON gets for values the json module does not know (flow parameters hold dates and paths)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID, Path)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def dump_json(value: Any) -> str:
    """JSON for the state database: datetimes as ISO strings; NaN refused (PostgreSQL would reject it)."""
    return json.dumps(value, default=_json_value, allow_nan=False)


def create_state_engine(url: str) -> Engine:
    """An engine for `url` (SQLite or PostgreSQL). For SQLite: the parent directory is created, and each
    connection runs in WAL mode (readers do not block the writer) with foreign keys enforced."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StateError(f"the state database must be SQLite or PostgreSQL, not {parsed.get_backend_name()!r} "
                         f"({parsed.render_as_string(hide_password=True)})")
    if parsed.get_backend_name() == "sqlite":
        _create_sqlite_parent(parsed)
    engine = create_engine(parsed, json_serializer=dump_json)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _create_sqlite_parent(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def alembic_config() -> Config:
    """Alembic's configuration, built in code: the scripts inside this package, numbered file names."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def head_revision() -> str:
    """The newest revision the package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StateError(f"no alembic revisions found in {MIGRATIONS_DIR}")
    return head


def upgrade_to_head(engine: Engine) -> None:
    """Migrates the database to the newest revision; a database already there is left as it is.

    On PostgreSQL an advisory lock serialises concurrent callers (two flows starting at once).
    """
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def write_revision(message: str) -> Path:
    """Autogenerates the next revision from the models, against a scratch SQLite database at head.

    The revision id is the next four-digit number, so the files read in order.
    """
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    rev_id = f"{int(head) + 1:04d}" if head else "0001"
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_state_engine(f"sqlite:///{scratch}/state.db")
        try:
            upgrade_to_head(engine)
            config = alembic_config()
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                revision = command.revision(config, message=message, autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
    if revision is None or isinstance(revision, list):
        raise StateError(f"alembic did not write a single revision for {message!r}")
    return Path(revision.path)
