"""Request and response schemas of the learner endpoints: tokens, a learner, their sessions."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from mentorflow.flows.learners import PAGE_DEFAULT, PAGE_MAX
from mentorflow.flows.schemas import SessionSchema
from mentorflow.platform.openapi import Documented


class MintLearnerTokenSchema(ma.Schema):
    ttl_seconds = fields.Integer(
        validate=validate.Range(min=60),
        metadata={
            "description": "How long the token works, in seconds: 60 to "
            "MENTORFLOW_LEARNER_TOKEN_MAX_TTL (30 days unless configured). Default "
            "MENTORFLOW_LEARNER_TOKEN_TTL (7 days)."
        },
    )


class LearnerTokenSchema(ma.Schema):
    token = fields.String(
        required=True,
        metadata={
            "pattern": "^lt_",
            "description": "The learner token (lt_…), shown once: hand it to the learner's "
            "device. It reads and advances that learner's sessions only.",
        },
    )
    expires_at = fields.DateTime(required=True)


class SessionCountsSchema(ma.Schema):
    active = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    abandoned = fields.Integer(required=True)


class LearnerSchema(ma.Schema):
    external_user_id = fields.String(required=True)
    first_seen_at = fields.DateTime(
        required=True, metadata={"description": "The first token minted or session started."}
    )
    last_active_at = fields.DateTime(
        required=True,
        metadata={"description": "The latest token minted, session started or step taken."},
    )
    sessions = fields.Nested(
        SessionCountsSchema,
        required=True,
        metadata={"description": "How many of the learner's sessions are in each status."},
    )


class UTCDateTimeField(fields.AwareDateTime):
    """An ISO 8601 date-time; without an offset it is UTC."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise ma.ValidationError("is out of range") from exc


class LearnerSessionsQuerySchema(ma.Schema):
    flow = fields.String(
        validate=validate.Length(min=1, max=80), metadata={"description": "A flow's slug."}
    )
    status = fields.String(validate=validate.OneOf(["active", "completed", "abandoned"]))
    updated_since = UTCDateTimeField(
        default_timezone=UTC,
        metadata={"description": "Only sessions updated at or after this time (ISO 8601)."},
    )
    cursor = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "The `next_cursor` of the previous page (opaque)."},
    )
    limit = fields.Integer(
        load_default=PAGE_DEFAULT,
        validate=validate.Range(min=1, max=PAGE_MAX),
        metadata={"description": f"Sessions per page, 1 to {PAGE_MAX} (default {PAGE_DEFAULT})."},
    )


class LearnerSessionPageSchema(ma.Schema):
    # Sessions as session_state shows them (already JSON-ready), documented as Session.
    items = fields.List(
        Documented(SessionSchema),
        required=True,
        metadata={"description": "Least recently updated first."},
    )
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the next page; null on the last page."},
    )


class SessionTokenSchema(ma.Schema):
    token = fields.String(
        required=True,
        metadata={
            "pattern": "^st_",
            "description": "The session's new token (st_…), shown once. The session's "
            "previous token stops working.",
        },
    )
