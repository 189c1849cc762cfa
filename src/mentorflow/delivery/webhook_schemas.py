"""Request and response schemas of the webhook endpoints, with their examples."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from mentorflow.delivery.webhooks import EVENT_TYPES


class WebhookCreateSchema(ma.Schema):
    url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "An https URL that resolves to public addresses."},
    )
    event_types = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        load_default=list,
        validate=validate.Length(max=len(EVENT_TYPES)),
        metadata={"description": "Event types sent to the endpoint; empty or absent: all."},
    )
    enabled = fields.Boolean(load_default=True)
    description = fields.String(load_default="", validate=validate.Length(max=500))


class WebhookUpdateSchema(ma.Schema):
    url = fields.String(validate=validate.Length(min=1, max=2000))
    event_types = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        validate=validate.Length(max=len(EVENT_TYPES)),
    )
    enabled = fields.Boolean(
        metadata={"description": "true re-enables an endpoint disabled after failing."}
    )
    description = fields.String(validate=validate.Length(max=500))


class WebhookSchema(ma.Schema):
    id = fields.Integer(required=True)
    url = fields.String(required=True)
    event_types = fields.List(fields.String(), required=True)
    enabled = fields.Boolean(required=True)
    description = fields.String(required=True)
    disabled_reason = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why the endpoint was disabled automatically; else null."},
    )
    failing_since = fields.DateTime(
        required=True,
        allow_none=True,
        metadata={"description": "When its current run of failed attempts began; else null."},
    )
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(
        required=True,
        metadata={
            "pattern": "^whsec_",
            "description": "The signing secret (Standard Webhooks), shown once.",
        },
    )


class WebhookListSchema(ma.Schema):
    items = fields.List(fields.Nested(WebhookSchema), required=True)


class WebhookSecretSchema(ma.Schema):
    secret = fields.String(
        required=True,
        metadata={
            "pattern": "^whsec_",
            "description": "The new signing secret, shown once; the previous one keeps "
            "signing beside it for 24 hours.",
        },
    )


class WebhookDeliverySchema(ma.Schema):
    event_id = fields.UUID(
        required=True, metadata={"description": "The webhook-id header of its requests."}
    )
    event_type = fields.String(required=True)
    event_created_at = fields.DateTime(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending", "delivered", "dead"]))
    attempts = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)
    next_attempt_at = fields.DateTime(required=True)
    delivered_at = fields.DateTime(required=True, allow_none=True)


class WebhookDeliveryListSchema(ma.Schema):
    items = fields.List(fields.Nested(WebhookDeliverySchema), required=True)


class WebhookDeliveryQuerySchema(ma.Schema):
    status = fields.String(validate=validate.OneOf(["pending", "delivered", "dead"]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class WebhookAttemptSchema(ma.Schema):
    event_id = fields.UUID(required=True)
    event_type = fields.String(required=True)
    succeeded = fields.Boolean(required=True)
    response_status = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "The endpoint's HTTP status; null when none came back."},
    )
    duration_ms = fields.Integer(required=True)
    error = fields.String(required=True, allow_none=True)
    attempted_at = fields.DateTime(required=True)


class WebhookAttemptListSchema(ma.Schema):
    items = fields.List(fields.Nested(WebhookAttemptSchema), required=True)


class WebhookAttemptQuerySchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class ReplayFailedSchema(ma.Schema):
    since = fields.AwareDateTime(
        required=True,
        default_timezone=None,
        metadata={"description": "Replay the failed deliveries of events from this time on."},
    )


class ReplayedSchema(ma.Schema):
    replayed = fields.Integer(
        required=True, metadata={"description": "How many deliveries are due again now."}
    )


WEBHOOK = {
    "id": 3,
    "url": "https://hooks.example.com/mentorflow",
    "event_types": ["session.completed", "learner.erased"],
    "enabled": True,
    "description": "CRM sync",
    "disabled_reason": None,
    "failing_since": None,
    "created_at": "2026-11-30T10:00:00+00:00",
    "updated_at": "2026-11-30T10:00:00+00:00",
}
WEBHOOK_CREATED = {**WEBHOOK, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
CREATE_REQUEST = {
    "url": "https://hooks.example.com/mentorflow",
    "event_types": ["session.completed", "learner.erased"],
    "description": "CRM sync",
}
UPDATE_REQUEST = {"enabled": True, "event_types": []}
SECRET = {"secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}
DELIVERIES = {
    "items": [
        {
            "event_id": "5f0c8a4e-7d0b-4c53-9a55-3f61b2b3f1aa",
            "event_type": "session.completed",
            "event_created_at": "2026-11-30T10:00:00+00:00",
            "status": "dead",
            "attempts": 8,
            "last_error": "The endpoint answered 503 (not a 2xx).",
            "next_attempt_at": "2026-11-30T11:04:00+00:00",
            "delivered_at": None,
        }
    ]
}
ATTEMPTS = {
    "items": [
        {
            "event_id": "5f0c8a4e-7d0b-4c53-9a55-3f61b2b3f1aa",
            "event_type": "session.completed",
            "succeeded": False,
            "response_status": 503,
            "duration_ms": 41,
            "error": "The endpoint answered 503 (not a 2xx).",
            "attempted_at": "2026-11-30T10:00:01+00:00",
        }
    ]
}
REPLAY_REQUEST = {"since": "2026-11-30T00:00:00+00:00"}
REPLAYED = {"replayed": 12}
