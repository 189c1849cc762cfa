"""idempotency_keys.response_body holds the response text as sent

Revision ID: 7c1d2e9f4a10
Revises: 2608e24039f3
Create Date: 2026-11-22 08:00:00.000000

A replay sends the first response byte for byte, and the step commit serializes its state
once (sent and stored) instead of twice, with no JSONB parse in the database. JSON text on
both sides of the change, so existing rows convert in place. On SQLite the batch "move and
copy" is safe here: no table refers to idempotency_keys, so no ON DELETE CASCADE fires.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '7c1d2e9f4a10'
down_revision = '2608e24039f3'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade():
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column(
            'response_body',
            existing_type=JSON_TYPE,
            type_=sa.Text(),
            existing_nullable=False,
            postgresql_using='response_body::text',
        )


def downgrade():
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column(
            'response_body',
            existing_type=sa.Text(),
            type_=JSON_TYPE,
            existing_nullable=False,
            postgresql_using='response_body::jsonb',
        )
