"""The change feed and a session's history: ``GET …/events`` and ``GET …/sessions/{id}/events``.

Both read :mod:`mentorflow.flows.feed` and answer the same page shape.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app, json
from flask.views import MethodView
from marshmallow import fields, validate

from mentorflow.flows import api as learner_api
from mentorflow.flows import examples as ex
from mentorflow.flows.feed import (
    DEFAULT_LIMIT,
    EVENT_TYPES,
    MAX_LIMIT,
    Cursor,
    FeedPage,
    InvalidCursor,
    read_events,
)
from mentorflow.platform.errors import Blueprint
from mentorflow.platform.openapi import problem, problem_example, problems, security
from mentorflow.tenants.credentials import CredentialKind, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "feed",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="What changed: the org's events in commit order behind an opaque cursor, and "
    "each session's history. Store `next_cursor` and ask again with `after`: no event is "
    "missed or repeated.",
)
scope_blueprint_to_org(blp)


class CursorField(fields.String):
    """An opaque feed cursor, loaded as a :class:`~mentorflow.flows.feed.Cursor`."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Cursor:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return Cursor.decode(text)
        except InvalidCursor:
            raise ma.ValidationError(
                "is not a cursor of this feed (send a next_cursor or an event's cursor)"
            ) from None


class EventTypesField(fields.String):
    """Comma-separated event types, loaded as a list."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[str]:
        names = [
            name.strip() for name in super()._deserialize(value, attr, data, **kwargs).split(",")
        ]
        unknown = [name for name in names if name not in EVENT_TYPES]
        if unknown:
            raise ma.ValidationError(
                f"unknown event type {unknown[0]!r}; expected some of {', '.join(EVENT_TYPES)}"
            )
        return names


_AFTER = CursorField(
    metadata={
        "description": "Start after this cursor: the `next_cursor` of the previous page (or "
        "any event's `cursor`). Omitted: from the oldest event kept.",
        "example": "MTIzNDU2Ljc4OQ",
    }
)
_LIMIT = fields.Integer(
    load_default=DEFAULT_LIMIT,
    validate=validate.Range(min=1, max=MAX_LIMIT),
    metadata={"description": f"Events per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."},
)


class SessionEventsQuerySchema(ma.Schema):
    after = _AFTER
    limit = _LIMIT


class OrgEventsQuerySchema(SessionEventsQuerySchema):
    types = EventTypesField(
        metadata={
            "description": f"Only these event types, comma-separated: {', '.join(EVENT_TYPES)}.",
            "example": "step.completed,session.completed",
        }
    )
    flow = fields.String(
        validate=validate.Length(min=1, max=80),
        metadata={"description": "Only events of sessions of this flow (its slug)."},
    )
    learner = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Only events of sessions with this `external_user_id`."},
    )


class EventSchema(ma.Schema):
    id = fields.String(required=True, metadata={"description": "The event's id (a UUID)."})
    cursor = fields.String(
        required=True, metadata={"description": "Send as `after` to read what came after it."}
    )
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    occurred_at = fields.DateTime(required=True)
    session_id = fields.String(required=True, allow_none=True)
    external_user_id = fields.String(required=True, allow_none=True)
    flow = fields.String(required=True, allow_none=True, metadata={"description": "Its slug."})
    flow_version = fields.Integer(required=True, allow_none=True)
    step_id = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The step answered (`step.completed`) or reopened."},
    )
    data = fields.Dict(
        required=True,
        metadata={
            "description": "The rest of the event: `status`; for `step.completed` `seq`, "
            "`phase`, `prompt`, `step_type`, `key`, `answer`; for `step.reopened` `seq`, "
            "`from_step_id`."
        },
    )


class EventPageSchema(ma.Schema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_cursor = fields.String(
        required=True,
        metadata={
            "description": "Store it and send it as `after`: the next page starts right after "
            "this one (the same cursor again when the page is empty)."
        },
    )
    has_more = fields.Boolean(
        required=True, metadata={"description": "More events are ready: ask again at once."}
    )


_CURSOR_INVALID = problem_example(
    422,
    problem="validation",
    detail="The request has invalid fields: query.after.",
    errors={
        "query.after": ["is not a cursor of this feed (send a next_cursor or an event's cursor)"]
    },
)
_LIMIT_INVALID = problem_example(
    422,
    problem="validation",
    detail="The request has invalid fields: query.limit.",
    errors={
        "query.limit": [
            f"Must be greater than or equal to 1 and less than or equal to {MAX_LIMIT}."
        ]
    },
)
_EVENT = {
    "id": "7b1f3c52-0b7e-4a55-9d3c-0b2d8e6f4a10",
    "cursor": "NzQxMjMuMjE",
    "type": "step.completed",
    "occurred_at": "2026-11-30T09:14:03.120000+00:00",
    "session_id": ex.SESSION_ID,
    "external_user_id": "user-8841",
    "flow": "pricing-workshop",
    "flow_version": 3,
    "step_id": "phase-1-step-1",
    "data": {
        "status": "active",
        "seq": 1,
        "phase": "phase-1",
        "prompt": "How far out are you booked right now?",
        "step_type": "single_choice",
        "key": "booking-status",
        "answer": "booked-1-month",
    },
}
EVENT_PAGE_EXAMPLE = {"events": [_EVENT], "next_cursor": "NzQxMjMuMjE", "has_more": False}


def _page_response(page: FeedPage) -> Any:
    # Built as plain values and encoded once: a page holds up to 500 events, and marshmallow
    # would cost more than the query (tests/test_feed.py checks EventPageSchema gives the same).
    return current_app.response_class(json.dumps(page.body()), mimetype="application/json")


_422 = problem(
    blp,
    422,
    "A query parameter is invalid: `limit` outside 1..500, an `after` that is not a cursor "
    "of this feed, an unknown event type.",
    examples={"cursor": _CURSOR_INVALID, "limit": _LIMIT_INVALID},
)


@blp.route("/events")
class OrgEvents(MethodView):
    @blp.doc(operationId="listOrgEvents", security=security(CredentialKind.SECRET))
    @blp.arguments(OrgEventsQuerySchema(), location="query")
    @blp.response(
        200,
        EventPageSchema,
        description="The next events of the org, oldest first, in commit order.",
        example=EVENT_PAGE_EXAMPLE,
    )
    @_422
    @problems(blp, 401, 403, 404, 429)
    def get(self, query: dict[str, Any], org: str) -> Any:
        """Read what changed in the org since a cursor: every event, in commit order."""
        require(CredentialKind.SECRET)
        return _page_response(read_events(current_org.id, **query))


@blp.route("/sessions/<session_id>/events")
class SessionEvents(MethodView):
    @blp.doc(operationId="listSessionEvents", security=security(*learner_api.SESSION_READERS))
    @blp.arguments(SessionEventsQuerySchema(), location="query")
    @blp.response(
        200,
        EventPageSchema,
        description="The session's events, oldest first: its start, every answer it gave "
        "(again after a back move), each back move (`step.reopened`), completion.",
        example=EVENT_PAGE_EXAMPLE,
    )
    @_422
    @problems(blp, 401, 403, 404, 429)
    def get(self, query: dict[str, Any], org: str, session_id: str) -> Any:
        """Read a session's history: every answer it ever gave, back moves, status changes."""
        # The learner API's own loader: the same credentials and 404s as reading the session.
        session = learner_api._load_session(session_id)
        return _page_response(read_events(current_org.id, session_id=session.id, **query))
