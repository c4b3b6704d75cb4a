"""Alembic's environment for the state database.

Run from code (`connectors.state.schema.upgrade_to_head`), which hands over an open connection in
`config.attributes["connection"]`; there is no alembic.ini and no URL to read.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from connectors.state.tables import StateBase, UtcDateTime


def render_item(kind: str, item: Any, _context: AutogenContext) -> str | bool:
    """Revisions spell our UTC timestamp as the plain column type, so they never import the models."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=StateBase.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("the state migrations run from code: connectors.state.schema.upgrade_to_head(engine) "
                       "or StateStore(url).ensure_schema()")
run_migrations(connection)
