"""Fixtures: an app per database backend, factories, and an API client for learners."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console_client import Console, add_staff
from mentorflow.flows import authoring
from mentorflow.flows.document import load_document
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import KeyKind, Org
from support import (
    DEMO_FLOW,
    POSTGRES_URL,
    Learner,
    OrgKeys,
    drop_own_postgres_databases,
    make_app,
    recreate_postgres_database,
    truncate_all,
)

pytest_plugins = ["recorder"]

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_own_postgres_databases()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def app(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    instance = tmp_path_factory.mktemp(f"instance-{backend}")
    if backend == "sqlite":
        url = f"sqlite:///{instance / 'test.db'}"
    else:
        url = recreate_postgres_database(POSTGRES_URL)
    app = make_app(url, instance)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    """An app context on a clean database, with no export files of an earlier test (org ids
    start again at 1 after the truncation; their export folders would be taken over)."""
    truncate_all(app)
    shutil.rmtree(Path(app.instance_path) / "exports", ignore_errors=True)
    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture
def client(ctx: Flask) -> FlaskClient:
    return ctx.test_client()


@pytest.fixture
def create_org(ctx: Flask):
    """Create an org with a publishable and a secret key."""

    def factory(slug: str | None = None, name: str = "Test Studio", **settings: Any) -> OrgKeys:
        begin_write(db.session)
        org = tenant_services.create_org(slug or f"org-{uuid.uuid4().hex[:8]}", name)
        if settings:
            tenant_services.update_org_settings(org, **settings)
        _, pk = tenant_services.create_api_key(org, KeyKind.PUBLISHABLE)
        _, sk = tenant_services.create_api_key(org, KeyKind.SECRET)
        db.session.commit()
        return OrgKeys(org=org, slug=org.slug, pk=pk, sk=sk)

    return factory


@pytest.fixture
def publish_flow(ctx: Flask):
    """Save a definition as a flow's draft and publish it; return the version number."""

    def factory(org: Org, definition: dict[str, Any] | str | Path | None = None) -> int:
        if definition is None:
            definition = DEMO_FLOW
        if isinstance(definition, Path):
            definition = definition.read_text()
        if isinstance(definition, str):
            definition = load_document(definition)
        begin_write(db.session)
        flow, _ = authoring.save_draft(org, definition)
        version, _ = authoring.publish_version(flow, notes="test", by="tests")
        db.session.commit()
        return version.number

    return factory


@pytest.fixture
def learner(client: FlaskClient):
    def factory(org: OrgKeys, key: str | None = None) -> Learner:
        return Learner(client, org.slug, key or org.pk)

    return factory


@pytest.fixture
def studio(create_org, publish_flow) -> OrgKeys:
    """The org ``studio`` ("Studio") with tests/data/small-flow.yaml (``onboarding``) published.

    A module that needs another org or flow defines its own ``studio``.
    """
    keys = create_org("studio", name="Studio")
    publish_flow(keys.org, SMALL_FLOW)
    return keys


@pytest.fixture
def mentor(client: FlaskClient, studio: OrgKeys) -> Console:
    """A mentor of ``studio``, signed in to the console."""
    console = Console(client)
    add_staff(studio.org, "mentor@studio.example", "mentor")
    assert console.login("mentor@studio.example").status_code == 302
    return console
