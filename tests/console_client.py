"""Drive the staff console through the Flask test client, CSRF tokens included."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient

from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import Org, Role

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
PASSWORD = "correct horse battery staple"


def csrf_token(client: FlaskClient, url: str = "/admin/login") -> str:
    """Return a CSRF token from a console page (the session cookie carries its secret)."""
    page = client.get(url)
    match = CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {url} ({page.status_code})"
    return match.group(1)


def add_staff(org: Org, email: str, role: Role | str) -> str:
    """Create a staff member of ``org`` with ``role``; return the email."""
    begin_write(db.session)
    tenant_services.create_staff(email, PASSWORD, org, Role(role))
    db.session.commit()
    return email


class Console:
    """A signed-in staff member's browser, minus the browser."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self, email: str, password: str = PASSWORD) -> Any:
        token = csrf_token(self.client)
        return self.client.post(
            "/admin/login", data={"email": email, "password": password, "csrf_token": token}
        )

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, **kwargs)

    def post(
        self,
        url: str,
        data: dict[str, Any] | None = None,
        *,
        form_page: str = "/admin/",
        **kwargs: Any,
    ) -> Any:
        """POST a console form with a fresh CSRF token."""
        payload = {"csrf_token": csrf_token(self.client, form_page), **(data or {})}
        return self.client.post(url, data=payload, **kwargs)
