"""Live console pages: a flow's room (who is on which step now) and live session pages.

Both follow the learner API's push (``platform/push.py``): the page opens a server-sent
events stream with the console's own cookie and moves or refreshes what changed. At every
heartbeat the stream checks that its staff member still has a mentor's seat in the org and
has not signed out (the account's session generation), else it ends.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Response, url_for
from flask_admin import expose

from mentorflow.admin.access import ConsoleView, current_seat, for_org, requires, seat
from mentorflow.flows.authoring import compiled_flow
from mentorflow.flows.live import follow, sse
from mentorflow.flows.models import Flow, FlowVersion, LearnerSession, SessionStatus
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.push import Change, current_hub
from mentorflow.tenants.models import Role, StaffUser
from mentorflow.tenants.roles import at_least, staff_orgs

#: The most learners a room shows (the most recently active first).
ROOM_LIMIT = 500
#: Completed sessions stay in the room's "done" column this long.
DONE_WINDOW = timedelta(hours=12)
_ROW = (
    LearnerSession.id,
    LearnerSession.org_id,
    LearnerSession.flow_id,
    LearnerSession.name,
    LearnerSession.email,
    LearnerSession.external_user_id,
    LearnerSession.current_step_id,
    LearnerSession.status,
    LearnerSession.version,
)


def learner_label(row: Any) -> str:
    """Return how the room names a learner: name, email, their user id, else the session."""
    return row.name or row.email or row.external_user_id or f"Learner {row.id[:6]}"


#: Stands for a session id in a URL made once per page (the stream runs outside its request).
_ID = "SESSION_ID"


def room_entry(row: Any, session_url: str) -> dict[str, Any]:
    """Return a learner in the room as the page and its stream show them.

    ``session_url`` is the session page's URL with ``SESSION_ID`` for the session's id.
    """
    return {
        "id": row.id,
        "label": learner_label(row),
        "step_id": row.current_step_id if row.status == SessionStatus.ACTIVE else None,
        "status": str(row.status),
        "version": row.version,
        "url": session_url.replace(_ID, row.id),
    }


def room_steps(flow: Flow) -> list[dict[str, Any]]:
    """Return the steps of the flow's live version (else its newest), in order."""
    version_id = flow.published_version_id or db.session.scalar(
        sa.select(sa.func.max(FlowVersion.id)).where(
            FlowVersion.flow_id == flow.id, FlowVersion.preview.is_(False)
        )
    )
    if version_id is None:
        return []
    engine = compiled_flow(db.session.get(FlowVersion, version_id))
    steps = []
    for step_id in engine.step_ids:
        step = engine.step(step_id)
        steps.append(
            {"id": step_id, "phase": step["phase_title"], "prompt": step.get("prompt") or step_id}
        )
    return steps


def _allowed_while(user_id: int, generation: int, org_id: int) -> Any:
    """Return a check that the staff member may still watch ``org_id`` live."""

    def still_allowed() -> bool:
        staff = db.session.get(StaffUser, user_id)
        if staff is None or (staff.session_generation or 0) != generation:
            return False
        return any(
            org.id == org_id and at_least(role, Role.MENTOR) for org, role in staff_orgs(staff)
        )

    return still_allowed


def _stream(body: Any) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


class LiveView(ConsoleView):
    """A flow's room and the streams of the live console pages (not in the menu)."""

    def is_visible(self) -> bool:
        return False

    @expose("/")
    @requires(Role.MENTOR)
    def index(self) -> Any:
        flows = db.session.scalars(
            sa.select(Flow)
            .where(Flow.org_id == seat().org.id, Flow.archived_at.is_(None))
            .order_by(Flow.title)
        ).all()
        return self.render("console/live/index.html", flows=flows)

    @expose("/<int:flow_id>")
    @requires(Role.MENTOR)
    def room(self, flow_id: int) -> Any:
        flow = for_org(Flow, flow_id)
        rows = db.session.execute(
            sa.select(*_ROW)
            .where(
                LearnerSession.org_id == flow.org_id,
                LearnerSession.flow_id == flow.id,
                LearnerSession.preview.is_(False),
                sa.or_(
                    LearnerSession.status == SessionStatus.ACTIVE,
                    sa.and_(
                        LearnerSession.status == SessionStatus.COMPLETED,
                        LearnerSession.updated_at >= utcnow() - DONE_WINDOW,
                    ),
                ),
            )
            .order_by(LearnerSession.updated_at.desc())
            .limit(ROOM_LIMIT)
        ).all()
        session_url = url_for("sessions.details", session_id=_ID)
        learners = [room_entry(row, session_url) for row in rows]
        return self.render(
            "console/live/room.html",
            flow=flow,
            steps=room_steps(flow),
            learners=learners,
            stream_url=self.get_url(".room_stream", flow_id=flow.id),
        )

    @expose("/<int:flow_id>/stream")
    @requires(Role.MENTOR)
    def room_stream(self, flow_id: int) -> Any:
        flow = for_org(Flow, flow_id)
        org_id, flow_key = flow.org_id, (flow.org_id, flow.id)
        subscription = current_hub().subscribe(flows=[flow_key])
        sent: dict[str, int] = {}
        session_url = url_for("sessions.details", session_id=_ID)

        def on_wake(changes: list[Change], resync: bool) -> list[str]:
            # A resync (changes may have been missed) can't name them: the room is not
            # re-read, the next move of each learner puts them right.
            fresh = [c.session_id for c in changes if c.version > sent.get(c.session_id, 0)]
            if not fresh:
                return []
            rows = db.session.execute(
                sa.select(*_ROW).where(
                    LearnerSession.org_id == org_id,
                    LearnerSession.id.in_(fresh),
                    LearnerSession.preview.is_(False),
                )
            ).all()
            events = []
            for row in rows:
                if row.flow_id == flow_key[1] and row.version > sent.get(row.id, 0):
                    sent[row.id] = row.version
                    events.append(sse(room_entry(row, session_url), event="learner"))
            return events

        return _stream(
            follow(subscription, [], on_wake=on_wake, still_allowed=self._still_allowed(org_id))
        )

    @expose("/sessions/<session_id>/stream")
    @requires(Role.MENTOR)
    def session_stream(self, session_id: str) -> Any:
        session = for_org(LearnerSession, session_id)
        org_id, shown = session.org_id, session.version
        subscription = current_hub().subscribe(session_ids=[session.id])

        def on_wake(changes: list[Change], resync: bool) -> list[str] | None:
            nonlocal shown
            version = db.session.scalar(
                sa.select(LearnerSession.version).where(
                    LearnerSession.org_id == org_id, LearnerSession.id == session_id
                )
            )
            if version is None:
                return None
            if version <= shown:
                return []
            shown = version
            return [sse({"version": version}, event="state", event_id=version)]

        return _stream(
            follow(subscription, [], on_wake=on_wake, still_allowed=self._still_allowed(org_id))
        )

    def _still_allowed(self, org_id: int) -> Any:
        found = current_seat()
        assert found is not None  # behind @requires
        staff = found.user
        return _allowed_while(staff.id, staff.session_generation or 0, org_id)


def views() -> list[Any]:
    """Return this module's console views."""
    return [LiveView(name="Live", endpoint="live", url="/admin/live")]
