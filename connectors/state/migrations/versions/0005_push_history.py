"""the sync log of every planned write, and persona history as a slowly changing dimension.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("old_values", sa.JSON(), nullable=False),
        sa.Column("new_values", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('planned', 'done', 'failed', 'conflict')", name=op.f("ck_sync_log_status")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_sync_log_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_log")),
    )
    with op.batch_alter_table("sync_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_log_run_id_target_record_id"), ["run_id", "target", "record_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_sync_log_target_record_id"), ["target", "record_id"], unique=False)
    op.create_table(
        "persona_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=18), nullable=False),
        sa.Column("persona", sa.String(length=80), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("catalog_version", sa.String(length=64), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_persona_history_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persona_history")),
    )
    with op.batch_alter_table("persona_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_persona_history_user_id_valid_from"), ["user_id", "valid_from"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("persona_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_persona_history_user_id_valid_from"))
    op.drop_table("persona_history")
    with op.batch_alter_table("sync_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_log_target_record_id"))
        batch_op.drop_index(batch_op.f("ix_sync_log_run_id_target_record_id"))
    op.drop_table("sync_log")
