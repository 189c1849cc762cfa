"""Hardening: console security headers, the production secret key, private instance files,
and the lifetime of learner session tokens."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from console_client import Console, add_staff
from mentorflow.app import create_app
from mentorflow.cli.demo import seed_demo
from mentorflow.flows.models import LearnerSession, SessionStatus
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role
from support import free_port

MENTORFLOW = str(Path(sys.executable).parent / "mentorflow")
ONE_STEP_FLOW = """
slug: one-step
title: One step
phases:
  - id: only
    title: Only
    steps:
      - {id: first, type: text, key: first, prompt: "Anything"}
      - {id: second, type: text, key: second, prompt: "Anything else"}
"""
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)


@pytest.fixture
def owner(ctx, create_org):
    studio = create_org()
    email = add_staff(studio.org, f"owner-{uuid.uuid4().hex[:6]}@example.com", Role.OWNER)
    console = Console(ctx.test_client())
    assert console.login(email).status_code == 302
    return studio, console


def test_console_pages_forbid_framing_sniffing_and_outside_scripts(ctx, owner, publish_flow):
    studio, console = owner
    publish_flow(studio.org, ONE_STEP_FLOW)
    pages = ["/admin/", "/admin/flows/", "/admin/jobs/", "/admin/settings/members"]
    pages += ["/admin/settings/keys", "/admin/settings/integrations", "/admin/sessions/"]
    nonces = set()
    responses = [(url, console.get(url)) for url in pages]
    responses.append(("/admin/login", ctx.test_client().get("/admin/login")))
    responses.append(("/admin/nowhere", console.get("/admin/nowhere")))
    for url, response in responses:
        assert response.status_code == (404 if url == "/admin/nowhere" else 200), url
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, url
        assert "object-src 'none'" in policy and "form-action 'self'" in policy, url
        script_src = re.search(r"script-src ([^;]*)", policy).group(1)
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        nonce = re.search(r"'nonce-([^']+)'", script_src).group(1)
        nonces.add(nonce)
        assert response.headers["X-Frame-Options"] == "DENY", url
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["Referrer-Policy"] == "same-origin", url
        # Everything the page runs is allowed by that policy: files of our own, or the nonce.
        html = response.get_data(as_text=True)
        for attributes in SCRIPT_TAG.findall(html):
            assert "src=" in attributes or f'nonce="{nonce}"' in attributes, (url, attributes)
        assert not INLINE_HANDLER.search(html), (url, INLINE_HANDLER.search(html))
    assert len(nonces) == len(responses)  # a fresh nonce for every response

    keys = dict(responses)["/admin/settings/keys"].get_data(as_text=True)
    assert "console.js" in keys and 'data-confirm="Revoke ' in keys
    script = ctx.test_client().get("/admin/_assets/console.js")
    assert script.status_code == 200 and "data-confirm" in script.get_data(as_text=True)
    script.close()

    # The player is made to be embedded in other sites: it is not forbidden to frame.
    player = ctx.test_client().get(f"/play/{studio.slug}/one-step?key={studio.pk}")
    assert player.status_code == 200
    assert "frame-ancestors" not in player.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in player.headers


def serve(env: dict[str, str], *args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [MENTORFLOW, "serve", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def serve_env(tmp_path):
    env = {**os.environ, "MENTORFLOW_INSTANCE_PATH": str(tmp_path / "instance")}
    for name in ("MENTORFLOW_DATABASE_URL", "MENTORFLOW_SECRET_KEY", "MENTORFLOW_ENVIRONMENT"):
        env.pop(name, None)
    return env


PRODUCTION_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"DATABASE_URL": PRODUCTION_DB}, "without MENTORFLOW_SECRET_KEY"),
        ({"DATABASE_URL": PRODUCTION_DB, "SECRET_KEY": "changeme"}, "shorter than 32 bytes"),
        ({"DATABASE_URL": PRODUCTION_DB, "SECRET_KEY": "é" * 15}, "shorter than 32 bytes"),
        ({"ENVIRONMENT": "production"}, "without MENTORFLOW_SECRET_KEY"),
        ({"ENVIRONMENT": "prod"}, "MENTORFLOW_ENVIRONMENT is 'prod'"),
    ],
)
def test_serve_refuses_production_without_a_strong_secret_key(serve_env, settings, says):
    env = {**serve_env, **{f"MENTORFLOW_{k}": v for k, v in settings.items()}}

    process = serve(env, "--port", str(free_port()))
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    assert process.returncode != 0
    assert "Error: " in stderr
    assert says in stderr


@pytest.mark.parametrize(
    "settings",
    [
        {"DATABASE_URL": PRODUCTION_DB, "SECRET_KEY": "k" * 32},
        {"DATABASE_URL": PRODUCTION_DB, "ENVIRONMENT": "development"},
        {},  # make run's embedded demo keeps its generated key
    ],
)
def test_serve_starts_with_a_strong_key_or_outside_production(serve_env, settings, tmp_path):
    env = {**serve_env, **{f"MENTORFLOW_{k}": v for k, v in settings.items()}}
    env["MENTORFLOW_WEB_CONCURRENCY"] = "1"
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = serve(env, "--port", str(port), stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up within 30 s"
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_instance_files_are_created_owner_only(tmp_path):
    instance = tmp_path / "instance"
    previous = os.umask(0o022)  # the usual default: new files readable by everyone
    try:
        app = create_app({"INSTANCE_PATH": str(instance), "DATABASE_URL": "", "SECRET_KEY": ""})
        with app.app_context():
            upgrade()
            seed_demo()  # writes the demo's keys and staff password to demo.json
            db.engine.dispose()
    finally:
        os.umask(previous)

    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    for name in ("mentorflow.db", "secret_key", "demo.json"):
        assert stat.S_IMODE((instance / name).stat().st_mode) == 0o600, name
    assert app.config["SECRET_KEY"] == (instance / "secret_key").read_text()


def close_session(session_id: str, status: SessionStatus, ago: timedelta) -> None:
    """Mark a session completed or abandoned ``ago``."""
    when = utcnow() - ago
    values = {"status": status, "updated_at": when, "last_activity_at": when}
    if status == SessionStatus.COMPLETED:
        values["completed_at"] = when
    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerSession).where(LearnerSession.id == session_id).values(**values)
    )
    db.session.commit()


def test_a_closed_sessions_token_expires_after_its_lifetime(ctx, create_org, publish_flow, learner):
    studio = create_org()
    publish_flow(studio.org, ONE_STEP_FLOW)
    lifetime = timedelta(seconds=int(ctx.config["SESSION_TOKEN_LIFETIME"]))
    walkers = {}
    for name in ("completed long ago", "abandoned long ago", "completed lately", "active"):
        walkers[name] = learner(studio)
        assert walkers[name].start("one-step").status_code == 201
    assert walkers["completed lately"].answer("first", "a").status_code == 200
    assert walkers["completed lately"].answer("second", "b").status_code == 200
    close_session(walkers["completed long ago"].session_id, SessionStatus.COMPLETED, lifetime * 2)
    close_session(walkers["abandoned long ago"].session_id, SessionStatus.ABANDONED, lifetime * 2)
    # An open session's token never expires, however long ago it was last used.
    begin_write(db.session)
    db.session.execute(
        sa.update(LearnerSession)
        .where(LearnerSession.id == walkers["active"].session_id)
        .values(updated_at=utcnow() - lifetime * 2)
    )
    db.session.commit()
    bad_token = learner(studio, "st_" + "x" * 40)
    bad_token.session_id = walkers["active"].session_id
    refused = bad_token.get()
    assert refused.status_code == 401

    for name in ("completed long ago", "abandoned long ago"):
        walker = walkers[name]
        own_session = walker.session_id
        for response in (walker.get(), walker.context(), walker.answer("first", "again")):
            assert response.status_code == 401, (name, response.status_code)
            assert response.mimetype == "application/problem+json"
            assert response.json == refused.json  # the same answer as a token never issued
            assert response.headers["WWW-Authenticate"] == refused.headers["WWW-Authenticate"]
        # Another session's URL tells it nothing either (a valid token would get 404).
        walker.session_id = walkers["active"].session_id
        assert walker.get().json == refused.json
        # The org's secret key still reads the session: only the learner's token expired.
        secret = learner(studio, studio.sk)
        secret.session_id = own_session
        assert secret.get().status_code == 200

    assert walkers["completed lately"].get().status_code == 200
    assert walkers["active"].get().status_code == 200
    assert walkers["active"].answer("first", "a").status_code == 200
