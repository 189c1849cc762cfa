"""preview versions and sessions: "Try the draft" without counting it anywhere

Revision ID: e4b7c1d9a2f6
Revises: e5f7a9c1b3d4
Create Date: 2026-11-30 05:40:00.000000

Plain ADD COLUMNs with a server default (no batch "move and copy": on SQLite that would drop
learner_sessions, and the drop deletes every step event, outbox event and idempotency key
through ON DELETE CASCADE).
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'e4b7c1d9a2f6'
down_revision = 'e5f7a9c1b3d4'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('flow_versions', sa.Column('preview', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('learner_sessions', sa.Column('preview', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    # Plain DROP COLUMNs (SQLite 3.35+), never a batch rebuild: see the module docstring.
    op.drop_column('learner_sessions', 'preview')
    op.drop_column('flow_versions', 'preview')
