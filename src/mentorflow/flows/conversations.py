"""Conversations: post and read a session's messages, and a learner's context. They flush.

A message belongs to a session and to one of its flow's steps (the current one by default).
Messages are numbered per session (``seq`` 1, 2, …) under the session's row lock, so their
order is the order they were committed. A session takes messages whatever its status: a
mentor may talk a finished flow through with the learner. Only an erased session refuses
them (:func:`is_erased`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mentorflow.flows.conversation_models import Message, MessageRole
from mentorflow.flows.learner_sessions import SessionRecord, find_sessions, session_context
from mentorflow.flows.models import Flow, Learner, LearnerSession
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.outbox import EventType, WriteTransaction, connection_for, emit_event
from mentorflow.tenants.models import Org

#: The longest message content, in characters.
CONTENT_MAX = 32_000
#: The largest ``metadata`` object, as compact UTF-8 JSON.
METADATA_MAX_BYTES = 4096
#: Messages per page of ``GET …/messages``: the default and the most one page holds.
PAGE_DEFAULT, PAGE_MAX = 50, 200
#: Messages in a context (session or learner): the default (``?messages=N``) and the most.
CONTEXT_MESSAGES_DEFAULT, CONTEXT_MESSAGES_MAX = 50, 200
#: A learner's context lists their most recently updated sessions, at most this many.
LEARNER_CONTEXT_SESSIONS = 20
#: A learner context cuts each message's content to this many characters (marked).
LEARNER_CONTEXT_CONTENT_CHARS = 2000

ROLES = tuple(str(role) for role in MessageRole)

#: Tells whether a session is erased; see :func:`register_erased_check`.
ErasedCheck = Callable[[SessionRecord], bool]
_ERASED_CHECKS: list[ErasedCheck] = []


def register_erased_check(check: ErasedCheck) -> None:
    """Make :func:`is_erased` also ask ``check`` (the erasure feature registers its own)."""
    if check not in _ERASED_CHECKS:
        _ERASED_CHECKS.append(check)


def is_erased(session: SessionRecord) -> bool:
    """Tell whether ``session`` is erased: posting a message to it is then a 409.

    A session whose status is ``erased`` is, and so is one any registered check says is.
    """
    return str(session.status) == "erased" or any(check(session) for check in _ERASED_CHECKS)


class UnknownStep(LookupError):
    """The message names a step that is not in the session's flow version."""


def metadata_problem(metadata: Any) -> str | None:
    """Return why ``metadata`` can't be a message's metadata, or None when it can."""
    if not isinstance(metadata, dict):
        return "must be a JSON object"
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        return f"must be at most {METADATA_MAX_BYTES} bytes as JSON ({size} sent)"
    return None


def post_message(
    org: Org,
    session: SessionRecord,
    *,
    role: str,
    content: str,
    step_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    transaction: WriteTransaction | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """Append a message to the session (whose row the caller holds locked) and emit
    ``message.created``; return the message as the API shows it. A learner's (``user``)
    message counts as the session's activity.

    ``step_id`` defaults to the session's current step; raise UnknownStep for a step the
    session's flow version does not have.
    """
    if step_id is None:
        step_id = session.current_step_id
    elif not session.flow_version.engine.has_step(step_id):
        raise UnknownStep(step_id)
    connection = connection_for(transaction)
    seq = next_seq(connection, session.id)
    message = {
        "id": uuid.uuid4(),
        "org_id": org.id,
        "session_id": session.id,
        "seq": seq,
        "step_id": step_id,
        "role": str(MessageRole(role)),
        "content": content,
        "metadata": metadata or {},
        "created_at": created_at or utcnow(),
    }
    connection.execute(Message.__table__.insert(), [message])
    if message["role"] == MessageRole.USER:
        # The learner talking is activity: the abandonment sweep leaves the session alone.
        # Not a new version: the session's state (answers, position) did not change.
        connection.execute(
            sa.update(LearnerSession)
            .where(LearnerSession.id == session.id)
            .values(last_activity_at=message["created_at"])
        )
    view = message_view(message)
    # emit_event drops a preview session's events: a staff member trying a draft.
    payload = (
        {"preview": True}
        if session.flow_version.preview
        else message_event_payload(
            org.slug,
            session,
            session.flow_version.flow_slug,
            session.flow_version.number,
            view,
        )
    )
    emit_event(
        org.id,
        EventType.MESSAGE_CREATED,
        payload,
        session_id=session.id,
        transaction=transaction,
    )
    return view


def next_seq(connection: sa.Connection, session_id: str) -> int:
    """Return the next message number of the session (its row must be locked)."""
    last = connection.execute(
        sa.select(sa.func.max(Message.seq)).where(Message.session_id == session_id)
    ).scalar()
    return (last or 0) + 1


def message_event_payload(
    org_slug: str,
    session: SessionRecord | LearnerSession,
    flow_slug: str,
    flow_version: int,
    message: dict[str, Any],
) -> dict[str, Any]:
    """Return the payload of a ``message.created`` event (content included: the sinks decide
    what they pass on)."""
    return {
        "org": org_slug,
        "session_id": session.id,
        "flow": flow_slug,
        "flow_version": flow_version,
        "status": str(session.status),
        "distinct_id": session.external_user_id or session.id,
        "memory_container": session.memory_container,
        "occurred_at": message["created_at"].isoformat(),
        "message_id": message["id"],
        "seq": message["seq"],
        "step_id": message["step_id"],
        "role": message["role"],
        "content": message["content"],
        "metadata": message["metadata"],
    }


def import_messages(
    org_id: int,
    org_slug: str,
    session: LearnerSession,
    flow_slug: str,
    flow_version: int,
    items: list[dict[str, Any]],
) -> None:
    """Append ``items`` (role, content, step_id, metadata, created_at) to a session the caller
    holds locked, numbered after its last message, and emit their ``message.created`` events
    (the legacy import's write, in the ORM session's transaction)."""
    if not items:
        return
    connection = db.session.connection()
    seq = next_seq(connection, session.id)
    rows = [
        {
            "id": uuid.uuid4(),
            "org_id": org_id,
            "session_id": session.id,
            "seq": seq + offset,
            "step_id": item["step_id"],
            "role": str(MessageRole(item["role"])),
            "content": item["content"],
            "metadata": item.get("metadata") or {},
            "created_at": item["created_at"],
        }
        for offset, item in enumerate(items)
    ]
    connection.execute(Message.__table__.insert(), rows)
    for row in rows:
        payload = message_event_payload(
            org_slug, session, flow_slug, flow_version, message_view(row)
        )
        emit_event(org_id, EventType.MESSAGE_CREATED, payload, session_id=session.id)


def message_metadata(session_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Return the metadata of every message of these sessions, by session."""
    found: dict[str, list[dict[str, Any]]] = {session_id: [] for session_id in session_ids}
    if session_ids:
        rows = db.session.execute(
            sa.select(Message.session_id, Message.meta).where(Message.session_id.in_(session_ids))
        )
        for session_id, metadata in rows:
            found[session_id].append(metadata or {})
    return found


def message_view(row: Any) -> dict[str, Any]:
    """Return a message (a row or its values) as the API shows it (MessageSchema dumps it)."""
    values = row if isinstance(row, dict) else row._mapping
    return {
        "id": str(values["id"]),
        "session_id": values["session_id"],
        "seq": values["seq"],
        "step_id": values["step_id"],
        "role": values["role"],
        "content": values["content"],
        "metadata": values["metadata"] if "metadata" in values else values["meta"],
        "created_at": values["created_at"],
    }


_COLUMNS = (
    Message.id,
    Message.session_id,
    Message.seq,
    Message.step_id,
    Message.role,
    Message.content,
    Message.meta.label("metadata"),
    Message.created_at,
)


def list_messages(
    org_id: int, session_id: str, after: int | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Return the session's messages after ``seq`` ``after``, oldest first, and the cursor of
    the next page (None when this page reached the last message)."""
    query = (
        sa.select(*_COLUMNS)
        .where(Message.org_id == org_id, Message.session_id == session_id)
        .order_by(Message.seq)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(Message.seq > after)
    rows = db.session.execute(query).all()
    items = [message_view(row) for row in rows[:limit]]
    more = len(rows) > limit
    return items, (str(items[-1]["seq"]) if more else None)


def recent_messages(org_id: int, session_id: str, count: int) -> tuple[list[dict[str, Any]], bool]:
    """Return the session's last ``count`` messages, oldest first, and whether older ones
    were left out."""
    if count == 0:
        total = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.org_id == org_id, Message.session_id == session_id)
        )
        return [], bool(total)
    rows = db.session.execute(
        sa.select(*_COLUMNS)
        .where(Message.org_id == org_id, Message.session_id == session_id)
        .order_by(Message.seq.desc())
        .limit(count + 1)
    ).all()
    items = [message_view(row) for row in rows[:count]]
    items.reverse()
    return items, len(rows) > count


def session_messages(org_id: int, session_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Return every message of these sessions, oldest first, by session (the console's and
    the export's read)."""
    found: dict[str, list[dict[str, Any]]] = {session_id: [] for session_id in session_ids}
    if not session_ids:
        return found
    rows = db.session.execute(
        sa.select(*_COLUMNS)
        .where(Message.org_id == org_id, Message.session_id.in_(session_ids))
        .order_by(Message.session_id, Message.seq)
    )
    for row in rows:
        found[row.session_id].append(message_view(row))
    return found


def learner_context(org: Org, learner: Learner, message_count: int) -> dict[str, Any]:
    """Return what an AI mentor needs to know about a learner, across their sessions.

    At most ``LEARNER_CONTEXT_SESSIONS`` sessions (most recently updated first) and
    ``message_count`` messages (newest first, across those and older sessions), each message's
    content cut to ``LEARNER_CONTEXT_CONTENT_CHARS``; ``truncated`` says what was left out.
    """
    records = find_sessions(
        LearnerSession.org_id == org.id,
        LearnerSession.learner_id == learner.id,
        order_by=[LearnerSession.updated_at.desc(), LearnerSession.id.desc()],
        limit=LEARNER_CONTEXT_SESSIONS + 1,
    )
    sessions = []
    for record in records[:LEARNER_CONTEXT_SESSIONS]:
        context = session_context(record)
        sessions.append(
            {
                "session_id": record.id,
                "flow": record.flow_version.flow_slug,
                "flow_version": record.flow_version.number,
                "status": str(record.status),
                "answers": context["answers"],
                "completed_phases": context["completed_phases"],
                "progress": context["progress"],
                "updated_at": record.updated_at,
            }
        )
    rows = db.session.execute(
        sa.select(*_COLUMNS, Flow.slug.label("flow"))
        .join(LearnerSession, LearnerSession.id == Message.session_id)
        .join(Flow, Flow.id == LearnerSession.flow_id)
        .where(
            Message.org_id == org.id,
            LearnerSession.org_id == org.id,
            LearnerSession.learner_id == learner.id,
        )
        .order_by(Message.created_at.desc(), Message.seq.desc())
        .limit(message_count + 1)
    ).all()
    messages = []
    cut_any = False
    for row in rows[:message_count]:
        view = message_view(row)
        view["flow"] = row.flow
        cut = len(view["content"]) > LEARNER_CONTEXT_CONTENT_CHARS
        if cut:
            view["content"] = view["content"][:LEARNER_CONTEXT_CONTENT_CHARS]
        view["content_truncated"] = cut
        cut_any = cut_any or cut
        messages.append(view)
    return {
        "external_user_id": learner.external_user_id,
        "sessions": sessions,
        "messages": messages,
        "truncated": {
            "sessions": len(records) > LEARNER_CONTEXT_SESSIONS,
            "messages": len(rows) > message_count,
            "content": cut_any,
        },
        "limits": {
            "sessions": LEARNER_CONTEXT_SESSIONS,
            "messages": message_count,
            "content_chars": LEARNER_CONTEXT_CONTENT_CHARS,
        },
    }
