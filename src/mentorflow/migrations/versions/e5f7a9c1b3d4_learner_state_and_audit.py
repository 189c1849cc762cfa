"""learner_state_and_audit: a learner's own state and its history; the org's audit trail

Revision ID: e5f7a9c1b3d4
Revises: e4c2a8b6d0f1
Create Date: 2026-11-30 05:50:00.000000

New tables only: nothing existing is rebuilt.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = 'e5f7a9c1b3d4'
down_revision = 'e4c2a8b6d0f1'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade():
    op.create_table('audit_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=320), nullable=False),
    sa.Column('action', sa.String(length=80), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('before', JSON, nullable=True),
    sa.Column('after', JSON, nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_audit_entries_org_id_orgs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entries'))
    )
    op.create_index('ix_audit_entries_org_entry', 'audit_entries', ['org_id', 'id'], unique=False)
    op.create_table('learner_states',
    sa.Column('learner_id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('state', JSON, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_learner_states_learner_id_learners'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_learner_states_org_id_orgs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('learner_id', name=op.f('pk_learner_states'))
    )
    op.create_index(op.f('ix_learner_states_org_id'), 'learner_states', ['org_id'], unique=False)
    op.create_table('learner_state_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('learner_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('change', JSON, nullable=False),
    sa.Column('state', JSON, nullable=False),
    sa.Column('by', sa.String(length=320), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_learner_state_changes_learner_id_learners'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], name=op.f('fk_learner_state_changes_org_id_orgs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_learner_state_changes')),
    sa.UniqueConstraint('learner_id', 'version', name=op.f('uq_learner_state_changes_learner_id_version'))
    )
    op.create_index(op.f('ix_learner_state_changes_org_id'), 'learner_state_changes', ['org_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_learner_state_changes_org_id'), table_name='learner_state_changes')
    op.drop_table('learner_state_changes')
    op.drop_index(op.f('ix_learner_states_org_id'), table_name='learner_states')
    op.drop_table('learner_states')
    op.drop_index('ix_audit_entries_org_entry', table_name='audit_entries')
    op.drop_table('audit_entries')
