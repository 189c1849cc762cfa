"""session_start_keys: Idempotency-Key of a session start, per API key

Revision ID: c4d8e2f6a1b3
Revises: 5e8a2c7b9d31
Create Date: 2026-11-30 02:50:00.000000

A retried start replays the first start's response (and token) instead of leaving an
orphan session. A new table: nothing existing is rebuilt.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'c4d8e2f6a1b3'
down_revision = '5e8a2c7b9d31'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('session_start_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('api_key_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response_body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_session_start_keys_api_key_id_api_keys'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_session_start_keys_org_id_orgs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['learner_sessions.id'], name=op.f('fk_session_start_keys_session_id_learner_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_session_start_keys')),
    sa.UniqueConstraint('org_id', 'api_key_id', 'key', name=op.f('uq_session_start_keys_org_id_api_key_id_key'))
    )
    with op.batch_alter_table('session_start_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_session_start_keys_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_session_start_keys_session_id'), ['session_id'], unique=False)


def downgrade():
    with op.batch_alter_table('session_start_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_session_start_keys_session_id'))
        batch_op.drop_index(batch_op.f('ix_session_start_keys_created_at'))

    op.drop_table('session_start_keys')
