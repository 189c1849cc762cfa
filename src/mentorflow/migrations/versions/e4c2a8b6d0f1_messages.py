"""messages: a session's conversation

Revision ID: e4c2a8b6d0f1
Revises: d7e1f3a5b9c2
Create Date: 2026-11-30 05:45:00.000000

A new table only: org_id and session_id are indexed together, so erasing a session's
messages is one DELETE.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = 'e4c2a8b6d0f1'
down_revision = 'd7e1f3a5b9c2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('messages',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('step_id', sa.String(length=120), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_messages_org_id_orgs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['learner_sessions.id'], name=op.f('fk_messages_session_id_learner_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('session_id', 'seq', name=op.f('uq_messages_session_id_seq'))
    )
    op.create_index('ix_messages_org_created', 'messages', ['org_id', 'created_at'], unique=False)
    op.create_index('ix_messages_org_session', 'messages', ['org_id', 'session_id', 'seq'], unique=False)


def downgrade():
    op.drop_index('ix_messages_org_session', table_name='messages')
    op.drop_index('ix_messages_org_created', table_name='messages')
    op.drop_table('messages')
