"""Helpers shared by the test modules: real apps on real databases, and API clients.

Test modules import from here (``from support import …``), never from a conftest: without
``__init__.py`` files every conftest is the module "conftest", so such imports would depend
on collection order.
"""

from __future__ import annotations

import contextvars
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

from mentorflow.app import create_app
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org
from openapi_check import check_app_response

REQUIRE_SERVICES = os.environ.get("MENTORFLOW_REQUIRE_SERVICES") == "1"
#: Set explicitly, the test database is exactly that URL (and the ``_server``, ``_worker``,
#: ``_legacy`` databases beside it), dropped and recreated by each run and left behind. By
#: default each run gets names of its own, so that two runs on one machine never drop each
#: other's databases, and drops them again when the session ends.
POSTGRES_URL_IS_OWN = "MENTORFLOW_TEST_DATABASE_URL" not in os.environ
POSTGRES_URL = os.environ.get(
    "MENTORFLOW_TEST_DATABASE_URL",
    f"postgresql://postgres@127.0.0.1:5432/mentorflow_test_{os.getpid()}_{secrets.token_hex(3)}",
)
DEMO_FLOW = Path(__file__).resolve().parents[1] / "src/mentorflow/flows/demo/demo-flow.yaml"


def service_missing(reason: str) -> None:
    """Skip when a real service is absent, unless CI requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (MENTORFLOW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


_created_databases: set[str] = set()


def recreate_postgres_database(url: str) -> str:
    """Drop and create the test database named in ``url``; return the URL."""
    base, _, name = url.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL is not reachable at {base}: {exc}")
    _created_databases.add(url)
    return url


def drop_own_postgres_databases() -> None:
    """Drop the databases this run created under its own default names (none if set)."""
    if not POSTGRES_URL_IS_OWN:
        return
    while _created_databases:
        base, _, name = _created_databases.pop().rpartition("/")
        try:
            with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            print(f"could not drop test database {name}: {exc}", file=sys.stderr)


class IsolatedClient(FlaskClient):
    """A test client whose requests run in their own app context, as in production.

    Flask reuses an app context that is already pushed (the test's own), which would share
    the test's database session with the request.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = contextvars.Context().run(super().open, *args, **kwargs)
        # Every /v1 response a test sees must be one the OpenAPI document describes.
        check_app_response(self.application, response)
        return response


def make_app(database_url: str, instance_path: Path, **config: Any) -> Flask:
    """Create an app on ``database_url`` with the schema upgraded through the migrations."""
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "INSTANCE_PATH": str(instance_path),
            "SECRET_KEY": "test-secret",
            "RATE_LIMIT": "",
            # A stream read in-process (the test client reads a body to its end) ends soon.
            "STREAM_MAX_SECONDS": 0.5,
            **config,
        }
    )
    app.test_client_class = IsolatedClient
    with app.app_context():
        upgrade()
    return app


def truncate_all(app: Flask) -> None:
    """Empty every table, so each test starts from a clean database."""
    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables]
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(tables):
                    conn.execute(sa.text(f"DELETE FROM {table}"))


class OrgKeys:
    def __init__(self, org: Org, slug: str, pk: str, sk: str) -> None:
        self.org, self.slug, self.pk, self.sk = org, slug, pk, sk


class Learner:
    """Drive the learner API as an outside client would."""

    def __init__(self, client: FlaskClient, org: str, key: str) -> None:
        self.client, self.org, self.key = client, org, key
        self.session_id: str | None = None
        self.token: str | None = None

    def _headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        headers = {name.replace("_", "-"): value for name, value in extra.items()}
        return {"Authorization": f"Bearer {token or self.token or self.key}", **headers}

    def start(self, flow: str, **contact: Any) -> Any:
        response = self.client.post(
            f"/v1/orgs/{self.org}/flows/{flow}/sessions",
            json=contact,
            headers=self._headers(self.key),
        )
        if response.status_code == 201:
            self.session_id = response.json["session"]["id"]
            self.token = response.json["token"]
        return response

    def get(self, **headers: str) -> Any:
        return self.client.get(
            f"/v1/orgs/{self.org}/sessions/{self.session_id}", headers=self._headers(**headers)
        )

    def answer(
        self, step_id: str, answer: Any = None, *, omit: bool = False, **headers: str
    ) -> Any:
        body: dict[str, Any] = {"step_id": step_id}
        if not omit:
            body["answer"] = answer
        return self.client.post(
            f"/v1/orgs/{self.org}/sessions/{self.session_id}/steps",
            json=body,
            headers=self._headers(**headers),
        )

    def back(self, step_id: str) -> Any:
        return self.client.post(
            f"/v1/orgs/{self.org}/sessions/{self.session_id}/back",
            json={"step_id": step_id},
            headers=self._headers(),
        )

    def context(self) -> Any:
        return self.client.get(
            f"/v1/orgs/{self.org}/sessions/{self.session_id}/context", headers=self._headers()
        )


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
