"""The console's webhook pages (admins): endpoints, their deliveries and log, replays, tests."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, current_app, flash, redirect, request
from flask_admin import expose

from mentorflow.admin.access import ConsoleView, current_seat, requires, seat
from mentorflow.admin.settings.base import lock_org, no_store
from mentorflow.delivery import webhooks
from mentorflow.delivery.integrations import synthetic_event
from mentorflow.delivery.sinks import DeliveryFailed
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role
from mentorflow.worker.wakeup import wake_workers

log = logging.getLogger(__name__)


class WebhooksView(ConsoleView):
    """The org's webhook endpoints: add, change, rotate, test, read the log, replay."""

    def is_visible(self) -> bool:
        found = current_seat()
        return found is not None and found.can(Role.ADMIN)

    def _endpoint(self, webhook_id: int) -> webhooks.WebhookEndpoint:
        endpoint = webhooks.get_endpoint(seat().org.id, webhook_id)
        if endpoint is None:
            abort(404)
        return endpoint

    def _form_values(self) -> dict[str, Any]:
        return {
            "url": (request.form.get("url") or "").strip(),
            "event_types": [t for t in request.form.getlist("event_types") if t],
            "description": (request.form.get("description") or "").strip(),
        }

    def _index_page(self, errors: dict[str, str] | None = None, status: int = 200) -> Any:
        return self.render(
            "console/webhooks/index.html",
            endpoints=webhooks.list_endpoints(seat().org.id),
            event_types=webhooks.EVENT_TYPES,
            errors=errors or {},
            values=self._form_values() if errors else {},
        ), status

    @expose("/")
    @requires(Role.ADMIN)
    def index(self) -> Any:
        return self._index_page()

    @expose("/new", methods=["POST"])
    @requires(Role.ADMIN)
    def create(self) -> Any:
        org = lock_org()
        try:
            endpoint, secret = webhooks.create_endpoint(
                org.id, current_app.config, **self._form_values()
            )
        except webhooks.WebhookError as exc:
            db.session.rollback()
            return self._index_page({exc.field: exc.message}, 422)
        db.session.commit()
        log.info("webhook %s added in org %s by %s", endpoint.id, org.slug, seat().user.email)
        page = self.render("console/webhooks/created.html", endpoint=endpoint, secret=secret)
        return no_store(page, 201)

    @expose("/<int:webhook_id>")
    @requires(Role.ADMIN)
    def details(self, webhook_id: int) -> Any:
        endpoint = self._endpoint(webhook_id)
        return self.render(
            "console/webhooks/details.html",
            endpoint=endpoint,
            event_types=webhooks.EVENT_TYPES,
            deliveries=webhooks.list_deliveries(endpoint, limit=50),
            attempts=webhooks.list_attempts(endpoint, 50),
            since_default=(datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        )

    @expose("/<int:webhook_id>/edit", methods=["POST"])
    @requires(Role.ADMIN)
    def edit(self, webhook_id: int) -> Any:
        lock_org()
        endpoint = self._endpoint(webhook_id)
        changes = {**self._form_values(), "enabled": request.form.get("enabled") == "on"}
        try:
            webhooks.update_endpoint(endpoint, current_app.config, changes)
        except webhooks.WebhookError as exc:
            db.session.rollback()
            flash(f"Not saved: {exc.field} {exc.message}.", "danger")
            return redirect(self.get_url(".details", webhook_id=webhook_id))
        db.session.commit()
        flash("Saved.", "success")
        return redirect(self.get_url(".details", webhook_id=webhook_id))

    @expose("/<int:webhook_id>/rotate", methods=["POST"])
    @requires(Role.ADMIN)
    def rotate(self, webhook_id: int) -> Any:
        lock_org()
        endpoint = self._endpoint(webhook_id)
        secret = webhooks.rotate_secret(endpoint, current_app.config)
        db.session.commit()
        page = self.render(
            "console/webhooks/created.html", endpoint=endpoint, secret=secret, rotated=True
        )
        return no_store(page, 200)

    @expose("/<int:webhook_id>/delete", methods=["POST"])
    @requires(Role.ADMIN)
    def delete(self, webhook_id: int) -> Any:
        lock_org()
        endpoint = self._endpoint(webhook_id)
        url = endpoint.url
        webhooks.delete_endpoint(endpoint)
        db.session.commit()
        flash(f"Deleted the endpoint {url}: nothing more is sent to it.", "success")
        return redirect(self.get_url(".index"))

    @expose("/<int:webhook_id>/test", methods=["POST"])
    @requires(Role.ADMIN)
    def send_test(self, webhook_id: int) -> Any:
        current = seat()
        endpoint_id = self._endpoint(webhook_id).id
        event = synthetic_event(current.org.slug, current.user.email)
        # The transaction ends before the network call.
        db.session.rollback()
        try:
            sink = webhooks.build_webhook_sink(endpoint_id, current_app.config)
            sink.deliver(event)
        except DeliveryFailed as exc:
            flash(f"The test event {event.id} was not accepted: {exc.message}", "danger")
        else:
            flash(f"The endpoint accepted the test event {event.id} (step.completed).", "success")
        return redirect(self.get_url(".details", webhook_id=webhook_id))

    @expose("/<int:webhook_id>/deliveries/<event_id>/replay", methods=["POST"])
    @requires(Role.ADMIN)
    def replay(self, webhook_id: int, event_id: str) -> Any:
        lock_org()
        endpoint = self._endpoint(webhook_id)
        try:
            parsed = uuid.UUID(event_id)
        except ValueError:
            abort(404)
        if not webhooks.replay_delivery(endpoint, parsed):
            abort(404)
        db.session.commit()
        wake_workers([])
        flash(f"Event {event_id} is being sent again (same webhook-id, fresh signature).", "info")
        return redirect(self.get_url(".details", webhook_id=webhook_id))

    @expose("/<int:webhook_id>/replay-failed", methods=["POST"])
    @requires(Role.ADMIN)
    def replay_failed(self, webhook_id: int) -> Any:
        lock_org()
        endpoint = self._endpoint(webhook_id)
        try:
            since = datetime.fromisoformat(request.form.get("since") or "").replace(tzinfo=UTC)
        except ValueError:
            db.session.rollback()
            flash("Give the time to replay from as YYYY-MM-DDTHH:MM (UTC).", "danger")
            return redirect(self.get_url(".details", webhook_id=webhook_id))
        count = webhooks.replay_failed(endpoint, since)
        db.session.commit()
        if count:
            wake_workers([])
        flash(
            f"{count} failed deliver{'y' if count == 1 else 'ies'} since "
            f"{since:%Y-%m-%d %H:%M} UTC sent again.",
            "info",
        )
        return redirect(self.get_url(".details", webhook_id=webhook_id))


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [WebhooksView(name="Webhooks", endpoint="console_webhooks", url="/admin/webhooks")]
