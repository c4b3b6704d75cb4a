"""Initial state database: the run ledger, watermarks, quarantine and pull statistics.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("api_calls", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    op.create_table(
        "watermarks",
        sa.Column("sobject", sa.String(100), nullable=False),
        sa.Column("cursor_field", sa.String(100), nullable=False),
        sa.Column("value", sa.DateTime(timezone=True), nullable=False),
        sa.Column("history_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_watermarks_run_id_runs"),
        sa.PrimaryKeyConstraint("sobject", name="pk_watermarks"),
    )

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.Column("sobject", sa.String(100), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_quarantine_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("dedupe_key", name="uq_quarantine_dedupe_key"),
    )
    op.create_index("ix_quarantine_sobject_record_id", "quarantine", ["sobject", "record_id"])
    op.create_index("ix_quarantine_run_id", "quarantine", ["run_id"])

    op.create_table(
        "pull_stats",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("sobject", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("api_calls", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("watermark_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("watermark_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("mode IN ('rest', 'bulk')", name="ck_pull_stats_mode"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_pull_stats_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", "sobject", name="pk_pull_stats"),
    )


def downgrade() -> None:
    op.drop_table("pull_stats")
    op.drop_table("quarantine")
    op.drop_table("watermarks")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_table("runs")
