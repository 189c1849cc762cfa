"""Try the draft: the console starts a preview session and opens the player on it."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, session
from flask_admin import expose

from mentorflow.admin.access import for_org, seat
from mentorflow.flows.models import Flow, LearnerSession
from mentorflow.flows.preview import start_preview
from mentorflow.platform.extensions import db

#: The preview tokens a browser keeps in its console session, newest last.
_TOKENS = "preview_tokens"
_KEEP_TOKENS = 5


class DraftPreview:
    """Console endpoints of "Try the draft", mixed into the Flows view."""

    @expose("/<int:flow_id>/try", methods=["POST"])
    def try_draft(self, flow_id: int) -> Any:
        """Start a preview session on the draft and open the player on it."""
        flow = for_org(Flow, flow_id)
        preview, token = start_preview(seat().org, flow, by=seat().user.email)
        db.session.commit()
        tokens = dict(session.get(_TOKENS) or {})
        tokens[preview.id] = token
        session[_TOKENS] = dict(list(tokens.items())[-_KEEP_TOKENS:])
        return redirect(self.get_url(".try_page", flow_id=flow.id, session_id=preview.id))  # type: ignore[attr-defined]

    @expose("/<int:flow_id>/try/<session_id>")
    def try_page(self, flow_id: int, session_id: str) -> Any:
        """The player on a preview session, marked as a preview."""
        flow = for_org(Flow, flow_id)
        preview = db.session.get(LearnerSession, session_id[:32])
        if preview is None or preview.flow_id != flow.id or not preview.preview:
            abort(404)
        token = (session.get(_TOKENS) or {}).get(preview.id)
        if token is None:
            flash("That preview was opened in another browser; here is a new one.", "info")
            return redirect(self.get_url(".edit", flow_id=flow.id))  # type: ignore[attr-defined]
        return render_template(
            "player/play.html",
            org=seat().org.slug,
            flow=flow.slug,
            title=flow.title,
            key="",
            base_url=request.script_root,
            preview={
                "session_id": preview.id,
                "token": token,
                "back_url": self.get_url(".edit", flow_id=flow.id),  # type: ignore[attr-defined]
                "restart_url": self.get_url(".try_draft", flow_id=flow.id),  # type: ignore[attr-defined]
            },
        )
