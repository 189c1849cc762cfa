"""The schema comes from the migrations only, and they match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from mentorflow.platform.extensions import db


def test_models_and_migrations_agree(app):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


def test_migrations_downgrade_and_upgrade_again(app, tmp_path):
    from support import make_app

    scratch = make_app(f"sqlite:///{tmp_path / 'scratch.db'}", tmp_path)
    with scratch.app_context():
        downgrade(revision="base")
        with db.engine.connect() as connection:
            assert set(db.inspect(connection).get_table_names()) == {"alembic_version"}
        upgrade()
        with db.engine.connect() as connection:
            assert "learner_sessions" in db.inspect(connection).get_table_names()
        db.engine.dispose()
