"""The org's audit trail for its servers: who changed what, newest first."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate

from mentorflow.platform.errors import Blueprint, abort
from mentorflow.platform.openapi import problems, security
from mentorflow.tenants import audit
from mentorflow.tenants.credentials import CredentialKind, require
from mentorflow.tenants.scoping import scope_blueprint_to_org
from mentorflow.tenants.tenancy import current_org

blp = Blueprint(
    "audit",
    __name__,
    url_prefix="/v1/orgs/<org>/audit",
    description="The audit trail: every staff or key action that changed the org.",
)
scope_blueprint_to_org(blp)

_SUMMARY = {
    "type": "object",
    "description": "What the target was like, in short; never a secret",
}
ENTRY_EXAMPLE = {
    "id": 42,
    "at": "2026-11-30T10:00:00+00:00",
    "actor": "owner@example.com",
    "action": "key.revoked",
    "target": "key:sk_live_ab12",
    "before": {"kind": "secret", "revoked": False},
    "after": {"kind": "secret", "revoked": True},
}


class AuditEntrySchema(ma.Schema):
    id = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    actor = fields.String(
        required=True, metadata={"description": "The staff member's email, or the key's prefix"}
    )
    action = fields.String(
        required=True, metadata={"description": "`<thing>.<verb>`, e.g. `key.revoked`"}
    )
    target = fields.String(
        required=True, metadata={"description": "What was changed, e.g. `key:sk_live_ab12`"}
    )
    before = fields.Raw(required=True, allow_none=True, metadata=_SUMMARY)
    after = fields.Raw(required=True, allow_none=True, metadata=_SUMMARY)


class AuditPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AuditEntrySchema), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Pass as `after` for the next (older) page; null on the last"},
    )


class AuditQuerySchema(ma.Schema):
    after = fields.String(
        validate=validate.Length(max=40),
        metadata={"description": "A `next_cursor` from the previous page"},
    )
    limit = fields.Integer(
        load_default=audit.PAGE_DEFAULT,
        validate=validate.Range(min=1, max=audit.PAGE_MAX),
        metadata={"description": f"1 to {audit.PAGE_MAX}, default {audit.PAGE_DEFAULT}"},
    )
    actor = fields.String(
        validate=validate.Length(max=320),
        metadata={"description": "Only this actor's entries (an email or a key prefix)"},
    )
    action = fields.String(
        validate=validate.Length(max=80),
        metadata={"description": "Only this action (`key.revoked`) or family (`key`)"},
    )


@blp.route("")
class AuditEntries(MethodView):
    @blp.doc(operationId="listAuditEntries", security=security(CredentialKind.SECRET))
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema, example={"items": [ENTRY_EXAMPLE], "next_cursor": None})
    @problems(blp, 401, 403, 404, 422, 429)
    def get(self, query: dict[str, Any], org: str) -> Any:
        """List the org's audit entries, newest first (secret key)."""
        require(CredentialKind.SECRET)
        try:
            entries, next_cursor = audit.list_entries(
                current_org.id,
                after=query.get("after"),
                limit=query["limit"],
                actor=query.get("actor"),
                action=query.get("action"),
            )
        except audit.InvalidCursor:
            abort(422, errors={"query.after": ["is not a cursor this API handed out"]})
        return {"items": [audit.entry_body(entry) for entry in entries], "next_cursor": next_cursor}
