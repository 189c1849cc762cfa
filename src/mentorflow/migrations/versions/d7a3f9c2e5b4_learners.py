"""learners: learner tokens, the learner of a session, start keys per learner

Revision ID: d7a3f9c2e5b4
Revises: c4d8e2f6a1b3
Create Date: 2026-11-30 03:10:00.000000

learner_sessions gets a plain ADD COLUMN and CREATE INDEX (no foreign key, no batch
"move and copy": on SQLite that drops learner_sessions, and the drop deletes every step
event, outbox event and idempotency key through ON DELETE CASCADE). session_start_keys
is rebuilt in batch on SQLite: nothing refers to it.
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'd7a3f9c2e5b4'
down_revision = 'c4d8e2f6a1b3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('learners',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('external_user_id', sa.String(length=200), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(), nullable=False),
    sa.Column('last_active_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_learners_org_id_orgs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_learners')),
    sa.UniqueConstraint('org_id', 'external_user_id', name=op.f('uq_learners_org_id_external_user_id'))
    )
    op.create_table('learner_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('learner_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_learner_tokens_learner_id_learners'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_learner_tokens_org_id_orgs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_learner_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_learner_tokens_token_hash'))
    )
    op.create_index(op.f('ix_learner_tokens_learner_id'), 'learner_tokens', ['learner_id'], unique=False)
    op.add_column('learner_sessions', sa.Column('learner_id', sa.Integer(), nullable=True))
    op.create_index(op.f('ix_learner_sessions_learner_id'), 'learner_sessions', ['learner_id'], unique=False)
    with op.batch_alter_table('session_start_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('learner_id', sa.Integer(), nullable=True))
        batch_op.alter_column('api_key_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_session_start_keys_learner_id_learners'), 'learners', ['learner_id'], ['id'], ondelete='CASCADE')
        batch_op.create_unique_constraint(batch_op.f('uq_session_start_keys_org_id_learner_id_key'), ['org_id', 'learner_id', 'key'])


def downgrade():
    op.execute("DELETE FROM session_start_keys WHERE api_key_id IS NULL")
    with op.batch_alter_table('session_start_keys', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_session_start_keys_org_id_learner_id_key'), type_='unique')
        batch_op.drop_constraint(batch_op.f('fk_session_start_keys_learner_id_learners'), type_='foreignkey')
        batch_op.alter_column('api_key_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('learner_id')
    op.drop_index(op.f('ix_learner_sessions_learner_id'), table_name='learner_sessions')
    op.drop_column('learner_sessions', 'learner_id')
    op.drop_index(op.f('ix_learner_tokens_learner_id'), table_name='learner_tokens')
    op.drop_table('learner_tokens')
    op.drop_table('learners')
