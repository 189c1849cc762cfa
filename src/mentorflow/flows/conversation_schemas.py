"""Marshmallow schemas of messages and of the contexts that carry them."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from mentorflow.flows.conversations import (
    CONTENT_MAX,
    CONTEXT_MESSAGES_DEFAULT,
    CONTEXT_MESSAGES_MAX,
    LEARNER_CONTEXT_CONTENT_CHARS,
    LEARNER_CONTEXT_SESSIONS,
    METADATA_MAX_BYTES,
    PAGE_DEFAULT,
    PAGE_MAX,
    ROLES,
    metadata_problem,
)
from mentorflow.flows.schemas import ProgressSchema, answer_field


class MetadataField(fields.Dict):
    """A JSON object of at most ``METADATA_MAX_BYTES``."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        problem = metadata_problem(value)
        if problem:
            raise ma.ValidationError(problem)
        return super()._deserialize(value, attr, data, **kwargs)


class PostMessageSchema(ma.Schema):
    role = fields.String(
        required=True,
        validate=validate.OneOf(ROLES),
        metadata={"description": f"Who speaks: {', '.join(ROLES)}."},
    )
    content = fields.String(
        required=True,
        validate=validate.Length(min=1, max=CONTENT_MAX),
        metadata={"description": f"The message's text, 1 to {CONTENT_MAX} characters."},
    )
    step_id = fields.String(
        allow_none=True,
        validate=validate.Length(min=1, max=120),
        metadata={
            "description": "The step the message is about; omitted or null: the session's "
            "current step (null once the session is completed)."
        },
    )
    metadata = MetadataField(
        keys=fields.String(),
        metadata={
            "description": f"The caller's own JSON object (at most {METADATA_MAX_BYTES} bytes "
            "as compact JSON), returned as sent: a model name, a tool call id."
        },
    )


class MessageSchema(ma.Schema):
    id = fields.String(required=True, metadata={"description": "The message's id (a UUID)."})
    session_id = fields.String(required=True)
    seq = fields.Integer(
        required=True,
        metadata={"description": "The message's number in its session: 1, 2, … in order."},
    )
    step_id = fields.String(required=True, allow_none=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = fields.String(required=True)
    metadata = fields.Dict(keys=fields.String(), required=True)
    created_at = fields.DateTime(required=True)


class MessageCreatedSchema(ma.Schema):
    message = fields.Nested(MessageSchema, required=True)


class MessagesQuerySchema(ma.Schema):
    after = fields.Integer(
        # A message number is a 32-bit integer column.
        validate=validate.Range(min=0, max=2**31 - 1),
        metadata={
            "description": "Start after this cursor: the previous page's `next_cursor`, or a "
            "message's `seq` (to poll for newer messages). Omitted: from the first message.",
            "example": "50",
        },
    )
    limit = fields.Integer(
        load_default=PAGE_DEFAULT,
        validate=validate.Range(min=1, max=PAGE_MAX),
        metadata={"description": f"Messages per page, 1 to {PAGE_MAX} (default {PAGE_DEFAULT})."},
    )


class MessagePageSchema(ma.Schema):
    items = fields.List(fields.Nested(MessageSchema), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "Send as `after` for the next page; null when this page holds the "
            "last message (poll on with the last item's `seq`)."
        },
    )


_MESSAGES_PARAM = fields.Integer(
    load_default=CONTEXT_MESSAGES_DEFAULT,
    validate=validate.Range(min=0, max=CONTEXT_MESSAGES_MAX),
    metadata={
        "description": f"How many of the latest messages to include, 0 to "
        f"{CONTEXT_MESSAGES_MAX} (default {CONTEXT_MESSAGES_DEFAULT})."
    },
)


class ContextQuerySchema(ma.Schema):
    messages = _MESSAGES_PARAM


class LearnerContextSessionSchema(ma.Schema):
    session_id = fields.String(required=True)
    flow = fields.String(required=True, metadata={"description": "The flow's slug."})
    flow_version = fields.Integer(required=True)
    status = fields.String(required=True)
    answers = fields.Dict(keys=fields.String(), values=answer_field(), required=True)
    completed_phases = fields.List(fields.String(), required=True)
    progress = fields.Nested(ProgressSchema, required=True)
    updated_at = fields.DateTime(required=True)


class LearnerContextMessageSchema(MessageSchema):
    flow = fields.String(required=True, metadata={"description": "Its session's flow (slug)."})
    content_truncated = fields.Boolean(
        required=True,
        metadata={
            "description": f"The content was cut to its first {LEARNER_CONTEXT_CONTENT_CHARS} "
            "characters (getSessionContext or listSessionMessages have it whole)."
        },
    )


class ContextTruncationSchema(ma.Schema):
    sessions = fields.Boolean(
        required=True,
        metadata={"description": f"The learner has more than {LEARNER_CONTEXT_SESSIONS} sessions."},
    )
    messages = fields.Boolean(required=True, metadata={"description": "Older messages exist."})
    content = fields.Boolean(
        required=True, metadata={"description": "Some message's content was cut."}
    )


class ContextLimitsSchema(ma.Schema):
    sessions = fields.Integer(required=True)
    messages = fields.Integer(required=True)
    content_chars = fields.Integer(required=True)


class LearnerContextSchema(ma.Schema):
    external_user_id = fields.String(required=True)
    sessions = fields.List(
        fields.Nested(LearnerContextSessionSchema),
        required=True,
        metadata={
            "description": f"The learner's most recently updated sessions, newest first (at "
            f"most {LEARNER_CONTEXT_SESSIONS})."
        },
    )
    messages = fields.List(
        fields.Nested(LearnerContextMessageSchema),
        required=True,
        metadata={"description": "The learner's latest messages across sessions, newest first."},
    )
    truncated = fields.Nested(ContextTruncationSchema, required=True)
    limits = fields.Nested(ContextLimitsSchema, required=True)
