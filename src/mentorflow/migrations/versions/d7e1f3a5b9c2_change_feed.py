"""change_feed: order outbox events for the change feed (inserting transaction id, sequence)

Revision ID: d7e1f3a5b9c2
Revises: d7a3f9c2e5b4
Create Date: 2026-11-30 03:20:00.000000

``outbox_events.txid`` is the inserting transaction's id (PostgreSQL: ``pg_current_xact_id()``
as a server default; SQLite: 0) and ``feed_seq`` a number that only grows (PostgreSQL: an
identity; SQLite: an AFTER INSERT trigger takes the next value of ``feed_sequence``, so a
number is never reused even when the newest events are deleted). Existing events get txid 0
and feed_seq in the order they were created: they are all committed when this runs.
Columns are added in place (no table rebuild: on SQLite that would cascade to deliveries).
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'd7e1f3a5b9c2'
down_revision = 'd7a3f9c2e5b4'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('feed_sequence',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feed_sequence'))
    )
    op.add_column('outbox_events', sa.Column('txid', sa.BigInteger(), server_default='0', nullable=False))
    if op.get_context().dialect.name == 'postgresql':
        op.execute("ALTER TABLE outbox_events ALTER COLUMN txid SET DEFAULT ((pg_current_xact_id()::text)::bigint)")
        op.add_column('outbox_events', sa.Column('feed_seq', sa.BigInteger(), sa.Identity(), nullable=False))
        # The identity numbered existing rows in storage order; renumber them by creation
        # (the sequence is already past their count, so new numbers stay above).
        op.execute(
            "UPDATE outbox_events SET feed_seq = ordered.n FROM ("
            " SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM outbox_events"
            ") AS ordered WHERE ordered.id = outbox_events.id"
        )
        op.execute("INSERT INTO feed_sequence (id, value) VALUES (1, 0)")
    else:
        op.add_column('outbox_events', sa.Column('feed_seq', sa.BigInteger(), server_default='0', nullable=False))
        op.execute(
            "UPDATE outbox_events SET feed_seq = ordered.n FROM ("
            " SELECT rowid AS r, row_number() OVER (ORDER BY created_at, rowid) AS n"
            " FROM outbox_events) AS ordered WHERE ordered.r = outbox_events.rowid"
        )
        op.execute(
            "INSERT INTO feed_sequence (id, value)"
            " SELECT 1, COALESCE(MAX(feed_seq), 0) FROM outbox_events"
        )
        op.execute(
            "CREATE TRIGGER outbox_events_feed_seq AFTER INSERT ON outbox_events BEGIN"
            " INSERT INTO feed_sequence (id, value) VALUES (1, 1)"
            " ON CONFLICT (id) DO UPDATE SET value = value + 1;"
            " UPDATE outbox_events SET feed_seq = (SELECT value FROM feed_sequence WHERE id = 1)"
            " WHERE rowid = NEW.rowid;"
            " END"
        )
    op.create_index(op.f('ix_outbox_events_org_feed'), 'outbox_events', ['org_id', 'txid', 'feed_seq'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_outbox_events_org_feed'), table_name='outbox_events')
    if op.get_context().dialect.name != 'postgresql':
        op.execute("DROP TRIGGER outbox_events_feed_seq")
    op.drop_column('outbox_events', 'feed_seq')
    op.drop_column('outbox_events', 'txid')
    op.drop_table('feed_sequence')
