"""Too many requests from one client are a 429 with Retry-After."""

from __future__ import annotations

from mentorflow.platform.extensions import db
from mentorflow.tenants import services
from mentorflow.tenants.models import KeyKind
from support import make_app


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
