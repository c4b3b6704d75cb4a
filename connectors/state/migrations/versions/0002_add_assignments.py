"""add assignments: each run's persona per user, with score, confidence, reason, catalog version and as-of.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('assignments',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=18), nullable=False),
    sa.Column('persona', sa.String(length=80), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('runner_up', sa.String(length=80), nullable=True),
    sa.Column('runner_up_score', sa.Float(), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('catalog_version', sa.String(length=64), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_assignments_run_id_runs')),
    sa.PrimaryKeyConstraint('run_id', 'user_id', name=op.f('pk_assignments'))
    )
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignments_as_of'), ['as_of'], unique=False)
        batch_op.create_index(batch_op.f('ix_assignments_user_id_as_of'), ['user_id', 'as_of'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assignments_user_id_as_of'))
        batch_op.drop_index(batch_op.f('ix_assignments_as_of'))

    op.drop_table('assignments')
