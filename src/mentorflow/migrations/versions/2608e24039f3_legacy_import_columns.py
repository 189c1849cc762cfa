"""legacy import columns

Revision ID: 2608e24039f3
Revises: 64b5a0e3bc4b
Create Date: 2026-11-22 01:16:12.073705

Plain ADD COLUMN and CREATE INDEX on both backends, never a batch "move and copy": on
SQLite that drops learner_sessions, and with foreign keys on, the drop deletes every
step event, outbox event and idempotency key through ON DELETE CASCADE. The downgrade
uses SQLite's native DROP COLUMN (3.35+) for the same reason.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '2608e24039f3'
down_revision = '64b5a0e3bc4b'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('learner_sessions', sa.Column('legacy_id', sa.String(length=200), nullable=True))
    op.add_column('learner_sessions', sa.Column('legacy_context', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True))
    op.create_index('ix_learner_sessions_org_legacy_id', 'learner_sessions', ['org_id', 'legacy_id'], unique=True)


def downgrade():
    op.drop_index('ix_learner_sessions_org_legacy_id', table_name='learner_sessions')
    op.drop_column('learner_sessions', 'legacy_context')
    op.drop_column('learner_sessions', 'legacy_id')
