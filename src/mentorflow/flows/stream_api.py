"""A session's live stream (server-sent events) and the tickets browsers open it with.

A stream sends the session's state as a ``state`` event after every committed change (the
push hub tells it; it re-reads the session), a heartbeat comment every
``STREAM_HEARTBEAT_SECONDS`` and nothing else. Browsers' ``EventSource`` cannot send an
Authorization header, and a bearer token in a URL ends up in proxies' logs: a browser mints a
stream ticket with its token (``POST …/stream-tickets``) and opens ``…/stream?ticket=…``.
A ticket is encrypted and authenticated with the app's key, bound to one session and the
credential that minted it, and works for ``STREAM_TICKET_TTL`` seconds; the stream it opens
lives as long as that credential does (checked again at every heartbeat).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import marshmallow as ma
from flask import Response, current_app, g, request
from flask.views import MethodView
from marshmallow import fields

from mentorflow.flows import examples as ex
from mentorflow.flows import learner_sessions
from mentorflow.flows.api import SESSION_READERS, STATE_HEADERS, _load_session
from mentorflow.flows.live import follow, session_exists, sse
from mentorflow.platform.crypto import decrypt_secret, encrypt_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.openapi import problem, problems, security
from mentorflow.platform.push import current_hub
from mentorflow.tenants.credentials import (
    Credential,
    CredentialKind,
    LearnerIdentity,
    credential_is_live,
)
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "learner_stream",
    __name__,
    url_prefix="/v1/orgs/<org>",
    description="Live sessions: a session's state pushed as server-sent events after every "
    "committed change, for every screen the learner has open.",
)


@blp.before_request
def _credential_from_ticket() -> None:
    # Before the org is entered (scope_blueprint_to_org's hook, registered next): a ticket
    # stands in for the Authorization header that EventSource cannot send.
    ticket = request.args.get("ticket")
    if ticket is not None and request.endpoint == "learner_stream.SessionStream":
        g.credential = ticket_credential(ticket, (request.view_args or {}).get("session_id"))


scope_blueprint_to_org(blp)

TICKET_PURPOSE = "stream-ticket"
BAD_TICKET = "The stream ticket is not valid: expired, damaged, or for another session."
EVENT_STREAM = "text/event-stream"
#: One server-sent event of the stream, as an SSE parser hands it over.
SSE_EVENT = {
    "type": "object",
    "description": "One event: `event: state`, `id:` the session's version, `data:` one line "
    "of JSON, the session's `{session, step}` exactly as getSession returns them. A first "
    "`retry:` and `: heartbeat` comments carry no data. On the wire:\n\n"
    '```\nretry: 2000\n\nid: 3\nevent: state\ndata: {"session": {…}, "step": {…}}\n\n'
    ": heartbeat\n```",
    "properties": {
        "event": {"type": "string", "enum": ["state"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}


class StreamTicketSchema(ma.Schema):
    ticket = fields.String(
        required=True,
        metadata={
            "description": "Opens this session's stream once as `?ticket=` (for EventSource, "
            "which cannot send headers); keep it out of logs."
        },
    )
    expires_at = fields.DateTime(
        required=True, metadata={"description": "Open the stream before this time."}
    )


class StreamQuerySchema(ma.Schema):
    ticket = fields.String(
        metadata={
            "description": "A ticket from mintStreamTicket, instead of an Authorization header "
            "(browsers' EventSource)."
        }
    )


def mint_ticket(session_id: str, credential: Credential) -> tuple[str, Any]:
    """Return a ticket opening ``session_id``'s stream with ``credential``, and its expiry."""
    expires_at = utcnow() + timedelta(seconds=int(current_app.config["STREAM_TICKET_TTL"]))
    claims = {
        "p": TICKET_PURPOSE,
        "s": session_id,
        "o": current_org.id,
        "k": str(credential.kind),
        "kid": credential.key_id,
        "th": credential.token_hash,
        "lid": credential.learner.learner_id if credential.learner else None,
        "x": expires_at.timestamp(),
    }
    return encrypt_secret(json.dumps(claims), current_app.config), expires_at


def ticket_credential(ticket: str, session_id: str | None) -> Credential:
    """Return the credential a ticket carries for ``session_id``; 401 unless it is valid and
    that credential still works. (Its org is checked against the URL's as any credential's.)"""
    try:
        claims = json.loads(decrypt_secret(ticket, current_app.config))
        valid = (
            claims["p"] == TICKET_PURPOSE
            and claims["s"] == session_id
            and claims["x"] > time.time()
        )
        org_id = int(claims["o"])
        kind = CredentialKind(claims["k"])
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        _bad_ticket(BAD_TICKET)
    learner = None
    if claims["lid"] is not None:
        learner = LearnerIdentity(org_id, claims["lid"], "")
    credential = Credential(
        kind, org_id=org_id, key_id=claims["kid"], token_hash=claims["th"], learner=learner
    )
    if not credential_is_live(credential):
        _bad_ticket("The credential this ticket was minted with no longer works.")
    return credential


def _bad_ticket(detail: str) -> None:
    abort(401, message=detail, headers={"WWW-Authenticate": 'Bearer realm="mentorflow"'})


def _require_streams() -> None:
    if not current_app.config["STREAMS"]:
        abort(503, message="Streams are turned off here (MENTORFLOW_STREAMS=0): poll instead.")


@blp.route("/sessions/<session_id>/stream-tickets")
class StreamTickets(MethodView):
    @blp.doc(operationId="mintStreamTicket", security=security(*SESSION_READERS))
    @blp.response(
        201,
        StreamTicketSchema,
        description="A ticket that opens this session's stream (`?ticket=`) within "
        "MENTORFLOW_STREAM_TICKET_TTL seconds, for as long as the credential that minted it "
        "works. It opens no other session's stream and nothing else.",
        example=ex.STREAM_TICKET,
    )
    @problems(blp, 401, 403, 404, 422, 429, 503)
    def post(self, org: str, session_id: str) -> Any:
        """Mint a short-lived ticket to open a session's stream from a browser."""
        _require_streams()
        session = _load_session(session_id)
        ticket, expires_at = mint_ticket(session.id, g.credential)
        return {"ticket": ticket, "expires_at": expires_at}


@blp.route("/sessions/<session_id>/stream")
class SessionStream(MethodView):
    @blp.doc(
        operationId="streamSession",
        security=security(*SESSION_READERS),
        parameters=[
            {
                "in": "header",
                "name": "Last-Event-ID",
                "description": "The last `id:` (session version) the client saw; the current "
                "state is sent at once only if it is newer. EventSource sends it when it "
                "reconnects.",
                "schema": {"type": "string"},
            }
        ],
    )
    @blp.arguments(StreamQuerySchema(), location="query", as_kwargs=True)
    @blp.response(
        200,
        SSE_EVENT,
        content_type=EVENT_STREAM,
        headers=STATE_HEADERS,
        description="Server-sent events: `state` events (`id:` the session's version, `data:` "
        "the session's `{session, step}` as getSession returns it), the first at once unless "
        "Last-Event-ID is current, then one after every committed change; a `: heartbeat` "
        "comment every 15 s. The stream ends when the credential stops working (revoked, "
        "expired, replaced), when the session is erased, or after MENTORFLOW_STREAM_MAX_SECONDS "
        "(reconnect with Last-Event-ID).",
        example=ex.STREAM_EVENT,
    )
    @problem(
        blp,
        401,
        "No credential, a credential that does not work, or a ticket that is expired, damaged "
        "or for another session.",
        examples={"bad_ticket": ex.problem_example(401, detail=BAD_TICKET)},
    )
    @problems(blp, 403, 404, 422, 429, 503)
    def get(self, org: str, session_id: str, ticket: str | None = None) -> Any:
        """Follow a session live: its state after every committed change (server-sent events)."""
        _require_streams()
        found = _load_session(session_id)
        credential: Credential = g.credential
        hub = current_hub()
        if hub.subscriber_count >= int(current_app.config["STREAM_LIMIT"]):
            abort(503, message="This server holds as many streams as it may: poll instead.")
        subscription = hub.subscribe(session_ids=[found.id])
        org_obj, org_id = current_org._get_current_object(), current_org.id

        def read() -> tuple[int, str] | None:
            record = learner_sessions.find_session(org_id, session_id)
            if record is None:
                return None
            body = learner_sessions.session_state(org_obj, record)
            return record.version, sse(body, event="state", event_id=record.version)

        def still_allowed() -> bool:
            # A session token dies with its session; other credentials outlive an erased one.
            if not credential_is_live(credential):
                return False
            return credential.kind == CredentialKind.SESSION or session_exists(org_id, session_id)

        try:
            # Read after subscribing: a change committed in between is not missed.
            current = read()
        except BaseException:
            hub.unsubscribe(subscription)
            raise
        if current is None:
            hub.unsubscribe(subscription)
            abort(404, message=f"No session '{session_id}'.")
        version, text = current
        seen = _last_event_id()
        first = [text] if seen is None or seen < version else []
        sent = max(version if first else 0, seen or 0)

        def on_wake(changes: list[Any], resync: bool) -> list[str] | None:
            nonlocal sent
            if not resync and all(change.version <= sent for change in changes):
                return []
            current = read()
            if current is None:
                return None
            if current[0] <= sent:
                return []
            sent = current[0]
            return [current[1]]

        events = follow(subscription, first, on_wake=on_wake, still_allowed=still_allowed)
        response = Response(events, mimetype=EVENT_STREAM)
        response.headers["ETag"] = f'"{version}"'  # the version when the stream opened
        response.headers["Cache-Control"] = "no-store"
        # nginx: pass each event on at once instead of filling a buffer first.
        response.headers["X-Accel-Buffering"] = "no"
        return response


def _last_event_id() -> int | None:
    value = request.headers.get("Last-Event-ID", "").strip()
    return int(value) if value.isdigit() and len(value) < 18 else None
