"""staff_users.session_generation: signing out or changing the password ends every session

Revision ID: b3e5a1c7d9f2
Revises: 7c1d2e9f4a10
Create Date: 2026-11-30 02:20:00.000000

A console session remembers the generation it was opened in; bumping the user's generation
ends all of them at their next request. Plain ADD COLUMN and DROP COLUMN,
never a batch "move and copy" on SQLite, which would cascade into memberships.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'b3e5a1c7d9f2'
down_revision = '7c1d2e9f4a10'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        'staff_users',
        sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False),
    )


def downgrade():
    op.drop_column('staff_users', 'session_generation')
