"""The structured flow editor's JSON endpoints: read, validate and autosave a flow's draft.

The editor page (``console/flows/edit.html``, ``flow-editor.js``) edits the draft as JSON;
these endpoints validate it with the same validator as a YAML save or ``flow push`` and save
it under the draft-revision rule: a save names the revision it was made from, and a newer
revision answers 409 with what changed, so the mentor chooses instead of losing an edit.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from flask_admin import expose

from mentorflow.admin.access import for_org, requires, seat
from mentorflow.flows import authoring
from mentorflow.flows.document import (
    CONTACT_FIELDS,
    OPERATORS,
    STEP_TYPES,
    DocumentError,
    FieldError,
    dump_document,
    validate_document,
)
from mentorflow.flows.models import Flow
from mentorflow.platform import jsonio
from mentorflow.platform.extensions import db
from mentorflow.platform.text import unstorable_strings
from mentorflow.tenants import audit
from mentorflow.tenants.models import Role

#: The largest draft the editor may send, in bytes (the YAML view's limit is in characters).
MAX_DRAFT_BYTES = 1_000_000


def step_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    """Return step ids added, removed and changed between two definitions."""

    def steps(definition: dict[str, Any]) -> dict[str, Any]:
        return {
            s["id"]: s
            for phase in definition.get("phases", [])
            for s in phase.get("steps", [])
            if isinstance(s, dict) and "id" in s
        }

    before, after = steps(old), steps(new)
    return {
        "added": [sid for sid in after if sid not in before],
        "removed": [sid for sid in before if sid not in after],
        "changed": [sid for sid in after if sid in before and after[sid] != before[sid]],
    }


def check_draft(flow: Flow, document: Any) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """Validate an edited draft of ``flow``: (definition, []) or (None, errors)."""
    unstorable = unstorable_strings(document, "")
    if unstorable:
        return None, [FieldError(path, messages[0]) for path, messages in unstorable.items()]
    try:
        definition = validate_document(document)
    except DocumentError as exc:
        return None, exc.errors
    if definition["slug"] != flow.slug:
        message = f"the slug of this flow is '{flow.slug}'; create a new flow for another slug"
        return None, [FieldError("slug", message)]
    return definition, []


def editor_settings() -> dict[str, Any]:
    """Return what the editor's lists offer: step types, operators, contact fields."""
    return {
        "step_types": list(STEP_TYPES),
        "operators": list(OPERATORS),
        "contact_fields": list(CONTACT_FIELDS),
    }


def draft_state(flow: Flow) -> dict[str, Any]:
    """Return the draft as the editor loads it: the document, its revision and its YAML."""
    return {
        "document": flow.draft,
        "revision": flow.draft_revision,
        "yaml": dump_document(flow.draft),
        "title": flow.title,
    }


def save_edited_draft(flow: Flow, definition: dict[str, Any], revision: int) -> None:
    """Save the draft a mentor edited from ``revision`` and record it in the audit trail.

    Raises ``authoring.DraftConflict`` when someone saved another revision meanwhile.
    """
    authoring.save_draft(seat().org, definition, expected_revision=revision)  # type: ignore[arg-type]
    audit.record(
        flow.org_id,
        "flow.draft_saved",
        f"flow:{flow.slug}",
        before={"draft_revision": revision},
        after={"draft_revision": flow.draft_revision},
    )


def _errors(errors: list[FieldError]) -> list[dict[str, Any]]:
    return [{"path": error.path, "message": error.message} for error in errors]


def _json_body() -> tuple[dict[str, Any] | None, Response | None]:
    if request.content_length is not None and request.content_length > MAX_DRAFT_BYTES:
        return None, _problem(413, "The draft is too large to save.")
    try:
        body = jsonio.loads(request.get_data(cache=False) or b"null")
    except ValueError as exc:
        return None, _problem(400, f"The request is not JSON: {exc}")
    if not isinstance(body, dict) or not isinstance(body.get("document"), dict):
        return None, _problem(422, "Send {document: {...}} with the flow document.")
    return body, None


def _problem(status: int, detail: str, **extra: Any) -> Response:
    response = jsonify({"status": status, "detail": detail, **extra})
    response.status_code = status
    return response


class DraftEditing:
    """Console endpoints of the structured editor, mixed into the Flows view."""

    @expose("/<int:flow_id>/draft.json")
    def draft_json(self, flow_id: int) -> Any:
        """Return the flow's draft for the editor."""
        flow = for_org(Flow, flow_id)
        return jsonify(draft_state(flow))

    @expose("/<int:flow_id>/validate", methods=["POST"])
    def validate_draft(self, flow_id: int) -> Any:
        """Validate an edited draft with the server's own validator; never saves."""
        flow = for_org(Flow, flow_id)
        body, problem = _json_body()
        if problem is not None:
            return problem
        _, errors = check_draft(flow, body["document"])  # type: ignore[index]
        return jsonify({"valid": not errors, "errors": _errors(errors)})

    @expose("/<int:flow_id>/draft", methods=["POST"])
    @requires(Role.MENTOR)
    def save_draft_json(self, flow_id: int) -> Any:
        """Save an edited draft made from ``revision``; 409 with what changed if it is stale."""
        flow = for_org(Flow, flow_id)
        body, problem = _json_body()
        if problem is not None:
            return problem
        revision = body.get("revision")  # type: ignore[union-attr]
        if isinstance(revision, bool) or not isinstance(revision, int):
            return _problem(
                422,
                "The editor sent no revision number; reload the page.",
                errors=[{"path": "revision", "message": "is required"}],
            )
        definition, errors = check_draft(flow, body["document"])  # type: ignore[index]
        if errors:
            return _problem(422, "The draft is not valid.", errors=_errors(errors))
        theirs = dict(flow.draft)
        try:
            save_edited_draft(flow, definition, revision)  # type: ignore[arg-type]
        except authoring.DraftConflict as exc:
            db.session.rollback()
            flow = for_org(Flow, flow_id)
            return _problem(
                409,
                str(exc),
                theirs=draft_state(flow),
                changes=step_changes(definition, flow.draft),  # type: ignore[arg-type]
            )
        db.session.commit()
        state = draft_state(flow)
        state["changed"] = step_changes(theirs, flow.draft)
        return jsonify(state)
