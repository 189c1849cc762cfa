"""The staff console: Flask-Admin 2 (Bootstrap 4) behind staff sign-in, scoped to one org."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, Request, Response, g, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_admin import Admin, AdminIndexView, expose
from flask_admin.theme import Bootstrap4Theme
from flask_wtf import CSRFProtect

from mentorflow.admin import (
    analytics,
    audit,
    jobs,
    learner_pages,
    live,
    sessions,
    settings,
    webhooks,
)
from mentorflow.admin.access import ConsoleView, current_seat, seat
from mentorflow.admin.auth import bp as auth_bp
from mentorflow.admin.auth import login_manager
from mentorflow.admin.flows import FlowsView
from mentorflow.delivery.services import delivery_status
from mentorflow.flows.models import Flow, LearnerSession
from mentorflow.platform.errors import API_PREFIXES
from mentorflow.platform.extensions import db
from mentorflow.tenants.audit import init_audit
from mentorflow.tenants.roles import staff_orgs

csrf = CSRFProtect()
#: Every console page lives under this path (Flask-Admin's views and the sign-in pages).
CONSOLE_PREFIX = "/admin"
# Scripts: the console's own files and Flask-Admin's, plus inline ones carrying the request's
# nonce (Flask-Admin renders some). Styles allow 'unsafe-inline': the templates set widths
# with style="" (progress bars) and small <style> blocks; a style cannot run code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
assets = Blueprint(
    "console_assets",
    __name__,
    static_folder="static/console",
    static_url_path=f"{CONSOLE_PREFIX}/_assets",
)


def csp_nonce() -> str:
    """Return this request's script nonce (one per request, never reused)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return g.csp_nonce


def add_security_headers(response: Response) -> Response:
    """Forbid framing, sniffing and outside scripts on console pages."""
    if request.path.startswith(CONSOLE_PREFIX):
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(
            nonce=csp_nonce()
        )
        response.headers.update(SECURITY_HEADERS)
    return response


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions for the console and the player, never for the API.

    API requests authenticate with bearer keys; opening (verifying) the console's cookie on
    each of them was a measurable part of a step commit's cost (``bench/README.md``). They get
    Flask's null session: read as empty, refused on write.
    """

    #: Paths whose requests never carry the console's cookie.
    cookieless_prefixes: tuple[str, ...] = API_PREFIXES

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith(self.cookieless_prefixes):
            return self.make_null_session(app)
        return super().open_session(app, request)


class DashboardView(ConsoleView, AdminIndexView):
    """The console's home: the org's flows, recent learners and the health of deliveries."""

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        flows = db.session.scalars(
            sa.select(Flow)
            .where(Flow.org_id == org.id, Flow.archived_at.is_(None))
            .order_by(Flow.title)
        ).all()
        recent = db.session.execute(
            sa.select(LearnerSession, Flow.slug)
            .join(Flow, Flow.id == LearnerSession.flow_id)
            .where(LearnerSession.org_id == org.id, LearnerSession.preview.is_(False))
            .order_by(LearnerSession.updated_at.desc())
            .limit(10)
        ).all()
        counts = dict(
            db.session.execute(
                sa.select(LearnerSession.status, sa.func.count())
                .where(LearnerSession.org_id == org.id, LearnerSession.preview.is_(False))
                .group_by(LearnerSession.status)
            ).all()
        )
        return self.render(
            "console/dashboard.html",
            flows=flows,
            recent=recent,
            counts={str(k): v for k, v in counts.items()},
            deliveries=delivery_status(org_id=org.id),
        )


def init_console(app: Flask, extra_views: list[Any] | None = None) -> Admin:
    """Mount the console at /admin on ``app``."""
    app.session_interface = ConsoleSessionInterface()
    login_manager.init_app(app)
    init_audit(app, staff_actor=audit.staff_actor)
    csrf.init_app(app)
    app.register_blueprint(auth_bp)
    app.register_blueprint(assets)
    app.after_request(add_security_headers)
    app.jinja_env.globals["staff_orgs"] = staff_orgs
    app.jinja_env.globals["current_seat"] = current_seat
    app.jinja_env.globals["has_endpoint"] = lambda name: name in app.view_functions
    admin = Admin(
        app,
        name="mentorflow",
        theme=Bootstrap4Theme(base_template="console/master.html", swatch="flatly", fluid=True),
        index_view=DashboardView(name="Dashboard", url="/admin", template="console/dashboard.html"),
        csp_nonce_generator=csp_nonce,
    )
    admin.add_view(FlowsView(name="Flows", endpoint="flows", url="/admin/flows"))
    menu = [
        *sessions.views(),
        *learner_pages.views(),
        *analytics.views(),
        *jobs.views(),
        *live.views(),
        *settings.views(),
        *audit.views(),
        *webhooks.views(),
        *(extra_views or []),
    ]
    for view in menu:
        admin.add_view(view)
    return admin
