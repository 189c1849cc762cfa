"""Too many requests from one client are a 429 with Retry-After; who "one client" is."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from mentorflow.platform.extensions import db
from mentorflow.tenants import services
from mentorflow.tenants.models import KeyKind, Org, Role
from support import make_app

PASSWORD = "correct horse battery staple"


def test_too_many_requests_is_429_with_retry_after(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'limited.db'}", tmp_path, RATE_LIMIT="3 per minute")
    with app.app_context():
        org = services.create_org("busy", "Busy")
        _, key = services.create_api_key(org, KeyKind.SECRET)
        db.session.commit()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    statuses = [
        client.get("/v1/orgs/busy/flows/none", headers=headers).status_code for _ in range(4)
    ]
    assert statuses == [404, 404, 404, 429]
    limited = client.get("/v1/orgs/busy/flows/none", headers=headers)
    assert limited.status_code == 429
    assert limited.mimetype == "application/problem+json"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # The console and health check are not limited by the API's budget.
    assert client.get("/healthz").status_code == 200
    with app.app_context():
        db.engine.dispose()


def busy_app(tmp_path, **config):
    app = make_app(f"sqlite:///{tmp_path / 'limited.db'}", tmp_path, **config)
    with app.app_context():
        org = services.create_org("busy", "Busy")
        _, key = services.create_api_key(org, KeyKind.SECRET)
        db.session.commit()
    return app, {"Authorization": f"Bearer {key}"}


def test_each_client_address_has_its_own_budget(tmp_path):
    app, headers = busy_app(tmp_path, RATE_LIMIT="2 per minute")
    client = app.test_client()

    def status(address: str) -> int:
        return client.get(
            "/v1/orgs/busy/flows/none", headers=headers, environ_base={"REMOTE_ADDR": address}
        ).status_code

    assert [status("10.0.0.1") for _ in range(3)] == [404, 404, 429]
    assert [status("10.0.0.2") for _ in range(2)] == [404, 404]
    with app.app_context():
        db.engine.dispose()


def test_a_limiter_outage_lets_learners_through(tmp_path, caplog):
    from support import free_port

    app, headers = busy_app(
        tmp_path,
        RATE_LIMIT="1 per minute",
        RATE_LIMIT_STORAGE_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    # The migrations' logging config replaced the root handlers: listen on the logger itself.
    logging.getLogger("mentorflow.platform.ratelimit").addHandler(caplog.handler)
    client = app.test_client()
    statuses = [
        client.get("/v1/orgs/busy/flows/none", headers=headers).status_code for _ in range(3)
    ]
    assert statuses == [404, 404, 404]
    assert "rate-limit storage failed" in caplog.text
    logging.getLogger("mentorflow.platform.ratelimit").removeHandler(caplog.handler)
    with app.app_context():
        db.engine.dispose()


def test_console_sign_in_is_throttled_per_address(tmp_path):
    app, _ = busy_app(tmp_path, RATE_LIMIT="1000 per minute", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    form = {"email": "nobody@example.org", "password": "wrong"}
    statuses = [client.post("/admin/login", data=form).status_code for _ in range(11)]
    assert statuses == [401] * 10 + [429]
    limited = client.post("/admin/login", data=form)
    assert limited.status_code == 429
    assert "Too many sign-in attempts" in limited.get_data(as_text=True)
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # Reading the sign-in page is not an attempt, and the API has its own budget.
    assert client.get("/admin/login").status_code == 200
    with app.app_context():
        db.engine.dispose()


def test_memory_counters_expire_without_a_thread_per_request(monkeypatch):
    import threading
    import time

    from mentorflow.platform.ratelimit import LazyMemoryStorage, RateLimit

    storage = LazyMemoryStorage()
    monkeypatch.setattr(LazyMemoryStorage, "SWEEP_SECONDS", 0.2)
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread))
    limit = RateLimit("2 per second", storage, "api")
    assert [limit.hit("10.0.0.1") for _ in range(3)][:2] == [None, None]
    assert limit.hit("10.0.0.1") is not None
    time.sleep(1.1)
    # A new window: the address is let through again, and the counter of an address that
    # went away is dropped by the next request's sweep (memory stays bounded).
    assert limit.hit("10.0.0.2") is None
    assert list(storage.storage) == ["LIMITER/api/10.0.0.2/2/1/second"]
    assert limit.hit("10.0.0.1") is None
    assert started == []


def test_cors_preflights_are_not_counted(tmp_path):
    app, headers = busy_app(tmp_path, RATE_LIMIT="2 per minute")
    client = app.test_client()
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    statuses = [
        client.options("/v1/orgs/busy/flows/none", headers=preflight).status_code for _ in range(5)
    ]
    assert statuses == [204] * 5
    # The real requests still have their whole budget.
    statuses = [
        client.get("/v1/orgs/busy/flows/none", headers=headers).status_code for _ in range(3)
    ]
    assert statuses == [404, 404, 429]
    with app.app_context():
        db.engine.dispose()


def api_status(client, headers, forwarded_for: str) -> int:
    return client.get(
        "/v1/orgs/busy/flows/none",
        headers={**headers, "X-Forwarded-For": forwarded_for},
        environ_base={"REMOTE_ADDR": "192.0.2.1"},
    ).status_code


def test_forwarded_for_is_ignored_by_default(tmp_path):
    app, headers = busy_app(tmp_path, RATE_LIMIT="2 per minute")
    client = app.test_client()
    # A client can't buy a new budget by making up an address.
    statuses = [api_status(client, headers, f"10.0.0.{n}") for n in range(3)]
    assert statuses == [404, 404, 429]
    with app.app_context():
        db.engine.dispose()


def test_forwarded_for_of_trusted_proxies_names_the_client(tmp_path):
    app, headers = busy_app(tmp_path, RATE_LIMIT="2 per minute", TRUSTED_PROXIES=1)
    client = app.test_client()
    # Behind one proxy, clients are told apart by the address the proxy saw,
    assert [api_status(client, headers, "10.0.0.1") for _ in range(3)] == [404, 404, 429]
    assert [api_status(client, headers, "10.0.0.2") for _ in range(2)] == [404, 404]
    # and what a client wrote in front of the proxy's entry is not believed.
    assert api_status(client, headers, "10.0.0.9, 10.0.0.1") == 429
    with app.app_context():
        db.engine.dispose()


def test_trusted_proxies_must_be_a_count(tmp_path):
    with pytest.raises(ValueError, match="MENTORFLOW_TRUSTED_PROXIES"):
        busy_app(tmp_path, TRUSTED_PROXIES="10.0.0.0/8")


def test_sign_in_fails_closed_when_its_counters_are_unreachable(tmp_path, caplog):
    from support import free_port

    app, _ = busy_app(
        tmp_path,
        RATE_LIMIT="100 per minute",
        RATE_LIMIT_STORAGE_URL=f"redis://127.0.0.1:{free_port()}/0",
        WTF_CSRF_ENABLED=False,
    )
    logging.getLogger("mentorflow.platform.ratelimit").addHandler(caplog.handler)
    with app.app_context():
        org = db.session.scalars(sa.select(Org).where(Org.slug == "busy")).one()
        services.create_staff("owner@example.org", PASSWORD, org, Role.OWNER)
        db.session.commit()
    client = app.test_client()
    refused = client.post("/admin/login", data={"email": "owner@example.org", "password": PASSWORD})
    assert refused.status_code == 503
    assert "try again" in refused.get_data(as_text=True)
    assert 'name="password"' in refused.get_data(as_text=True)
    # Not signed in: the console still asks for a sign-in.
    assert client.get("/admin/").status_code == 302
    assert "rate-limit storage failed" in caplog.text
    logging.getLogger("mentorflow.platform.ratelimit").removeHandler(caplog.handler)
    with app.app_context():
        db.engine.dispose()
