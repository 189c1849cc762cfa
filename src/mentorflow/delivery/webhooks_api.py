"""The webhook endpoints of an org (secret key): manage them, read their log, replay."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app
from flask.views import MethodView

from mentorflow.delivery import webhook_schemas as wx
from mentorflow.delivery import webhooks
from mentorflow.platform.db import begin_write
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.extensions import db
from mentorflow.platform.openapi import problems, security
from mentorflow.platform.outbox import call_after_commit
from mentorflow.tenants.credentials import CredentialKind, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/v1/orgs/<org>/webhooks",
    description="Webhook endpoints: signed (Standard Webhooks) POSTs of the org's events, "
    "retried with backoff, logged and replayable.",
)
scope_blueprint_to_org(blp)

SECRET = CredentialKind.SECRET
_WAKE = "mentorflow.wake_deliveries"


def register_delivery_wakeup(app: Any, wake: Any) -> None:
    """Make ``wake()`` what a replay calls after its commit (a worker's sweep else)."""
    app.extensions[_WAKE] = wake


def _wake_after_commit() -> None:
    wake = current_app.extensions.get(_WAKE)
    if wake is not None:
        call_after_commit(wake, None)


def _load(webhook_id: int) -> webhooks.WebhookEndpoint:
    require(SECRET)
    endpoint = webhooks.get_endpoint(current_org.id, webhook_id)
    if endpoint is None:
        abort(404, message=f"No webhook endpoint '{webhook_id}'.")
    return endpoint


def _refused(exc: webhooks.WebhookError) -> Any:
    db.session.rollback()
    abort(422, errors={exc.field: [exc.message]})


@blp.route("")
class WebhookCollection(MethodView):
    @blp.doc(operationId="listWebhooks", security=security(SECRET))
    @blp.response(200, wx.WebhookListSchema, example={"items": [wx.WEBHOOK]})
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str) -> Any:
        """List the org's webhook endpoints."""
        require(SECRET)
        return {"items": webhooks.list_endpoints(current_org.id)}

    @blp.doc(operationId="createWebhook", security=security(SECRET))
    @blp.arguments(wx.WebhookCreateSchema(), example=wx.CREATE_REQUEST)
    @blp.response(
        201,
        wx.WebhookCreatedSchema,
        description="The endpoint and its signing secret, shown this once.",
        example=wx.WEBHOOK_CREATED,
    )
    @problems(blp, 400, 401, 403, 404, 413, 415, 422, 429)
    def post(self, body: dict[str, Any], org: str) -> Any:
        """Add a webhook endpoint; its signing secret is in this response only."""
        require(SECRET)
        begin_write(db.session)
        try:
            endpoint, secret = webhooks.create_endpoint(current_org.id, current_app.config, **body)
        except webhooks.WebhookError as exc:
            return _refused(exc)
        db.session.commit()
        shown = {name: getattr(endpoint, name) for name in wx.WebhookSchema().fields}
        return {**shown, "secret": secret}


@blp.route("/<int:webhook_id>")
class WebhookResource(MethodView):
    @blp.doc(operationId="getWebhook", security=security(SECRET))
    @blp.response(200, wx.WebhookSchema, example=wx.WEBHOOK)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, org: str, webhook_id: int) -> Any:
        """Read a webhook endpoint (never its secret)."""
        return _load(webhook_id)

    @blp.doc(operationId="updateWebhook", security=security(SECRET))
    @blp.arguments(wx.WebhookUpdateSchema(), example=wx.UPDATE_REQUEST)
    @blp.response(200, wx.WebhookSchema, example=wx.WEBHOOK)
    @problems(blp, 400, 401, 403, 404, 413, 415, 422, 429)
    def patch(self, body: dict[str, Any], org: str, webhook_id: int) -> Any:
        """Change a webhook endpoint's url, event types, description or enabled."""
        require(SECRET)
        begin_write(db.session)
        endpoint = _load(webhook_id)
        try:
            webhooks.update_endpoint(endpoint, current_app.config, body)
        except webhooks.WebhookError as exc:
            return _refused(exc)
        db.session.commit()
        return endpoint

    @blp.doc(operationId="deleteWebhook", security=security(SECRET))
    @blp.response(204, description="The endpoint, its pending deliveries and its log are gone.")
    @problems(blp, 401, 403, 404, 422, 429)
    def delete(self, org: str, webhook_id: int) -> Any:
        """Delete a webhook endpoint: nothing more is sent to it."""
        require(SECRET)
        begin_write(db.session)
        webhooks.delete_endpoint(_load(webhook_id))
        db.session.commit()
        return None


@blp.route("/<int:webhook_id>/rotate-secret")
class WebhookSecretRotation(MethodView):
    @blp.doc(operationId="rotateWebhookSecret", security=security(SECRET))
    @blp.response(200, wx.WebhookSecretSchema, example=wx.SECRET)
    @problems(blp, 401, 403, 404, 422, 429)
    def post(self, org: str, webhook_id: int) -> Any:
        """Give the endpoint a new signing secret; the old one signs too for 24 hours."""
        require(SECRET)
        begin_write(db.session)
        secret = webhooks.rotate_secret(_load(webhook_id), current_app.config)
        db.session.commit()
        return {"secret": secret}


@blp.route("/<int:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @blp.doc(operationId="listWebhookDeliveries", security=security(SECRET))
    @blp.arguments(wx.WebhookDeliveryQuerySchema, location="query")
    @blp.response(200, wx.WebhookDeliveryListSchema, example=wx.DELIVERIES)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str, webhook_id: int) -> Any:
        """List the endpoint's deliveries, newest event first (optionally of one status)."""
        endpoint = _load(webhook_id)
        return {
            "items": webhooks.list_deliveries(
                endpoint, status=query.get("status"), limit=query["limit"]
            )
        }


@blp.route("/<int:webhook_id>/attempts")
class WebhookAttempts(MethodView):
    @blp.doc(operationId="listWebhookAttempts", security=security(SECRET))
    @blp.arguments(wx.WebhookAttemptQuerySchema, location="query")
    @blp.response(200, wx.WebhookAttemptListSchema, example=wx.ATTEMPTS)
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str, webhook_id: int) -> Any:
        """The delivery log: the endpoint's recent requests, newest first (status, duration,
        response code; never the response body)."""
        return {"items": webhooks.list_attempts(_load(webhook_id), query["limit"])}


@blp.route("/<int:webhook_id>/deliveries/<event_id>/replay")
class WebhookDeliveryReplay(MethodView):
    @blp.doc(operationId="replayWebhookDelivery", security=security(SECRET))
    @blp.response(202, wx.ReplayedSchema, example={"replayed": 1})
    @problems(blp, 401, 403, 404, 422, 429)
    def post(self, org: str, webhook_id: int, event_id: str) -> Any:
        """Send one event to the endpoint again (same webhook-id, a fresh signature)."""
        require(SECRET)
        begin_write(db.session)
        endpoint = _load(webhook_id)
        try:
            parsed = uuid.UUID(event_id)
        except ValueError:
            parsed = None
        if parsed is None or not webhooks.replay_delivery(endpoint, parsed):
            abort(404, message=f"No delivery of event '{event_id}' to this endpoint.")
        _wake_after_commit()
        db.session.commit()
        return {"replayed": 1}


@blp.route("/<int:webhook_id>/replay")
class WebhookReplayFailed(MethodView):
    @blp.doc(operationId="replayFailedWebhookDeliveries", security=security(SECRET))
    @blp.arguments(wx.ReplayFailedSchema(), example=wx.REPLAY_REQUEST)
    @blp.response(202, wx.ReplayedSchema, example=wx.REPLAYED)
    @problems(blp, 400, 401, 403, 404, 413, 415, 422, 429)
    def post(self, body: dict[str, Any], org: str, webhook_id: int) -> Any:
        """Send again every failed delivery (dead, or retrying after an error) of events since
        a time."""
        require(SECRET)
        begin_write(db.session)
        count = webhooks.replay_failed(_load(webhook_id), body["since"])
        if count:
            _wake_after_commit()
        db.session.commit()
        return {"replayed": count}
