"""Request and response schemas of the learner API."""

from __future__ import annotations

import re

import marshmallow as ma
from marshmallow import fields, validate

PHONE_RE = re.compile(r"^[0-9+\- ]{7,20}$")


class StartSessionSchema(ma.Schema):
    name = fields.String(validate=validate.Length(min=1, max=200), allow_none=True)
    email = fields.Email(validate=validate.Length(max=320), allow_none=True)
    phone = fields.String(
        validate=validate.Regexp(PHONE_RE, error="must be 7-20 digits, +, spaces or dashes"),
        allow_none=True,
    )
    external_user_id = fields.String(validate=validate.Length(min=1, max=200), allow_none=True)


class StepSubmissionSchema(ma.Schema):
    step_id = fields.String(required=True, validate=validate.Length(min=1, max=120))
    answer = fields.Raw(
        allow_none=True, metadata={"description": "Omit or null for steps that take no answer."}
    )


class BackSchema(ma.Schema):
    step_id = fields.String(required=True, validate=validate.Length(min=1, max=120))


class ProgressSchema(ma.Schema):
    completed = fields.Integer()
    total = fields.Integer()
    percent = fields.Integer()


class SessionSchema(ma.Schema):
    id = fields.String()
    org = fields.String()
    flow = fields.String()
    flow_version = fields.Integer()
    status = fields.String(metadata={"enum": ["active", "completed", "abandoned"]})
    current_step_id = fields.String(allow_none=True)
    answers = fields.Dict()
    completed_step_ids = fields.List(fields.String())
    progress = fields.Nested(ProgressSchema)
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    external_user_id = fields.String(allow_none=True)
    memory_container = fields.String()
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


class SessionStateSchema(ma.Schema):
    session = fields.Nested(SessionSchema)
    step = fields.Dict(
        allow_none=True,
        metadata={
            "description": "The current step's definition with phase_id and phase_title; "
            "null once the session is completed."
        },
    )


class SessionCreatedSchema(SessionStateSchema):
    token = fields.String(metadata={"description": "The session token (st_…), shown once."})


class ContactSchema(ma.Schema):
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)


class SessionContextSchema(ma.Schema):
    answers = fields.Dict()
    completed_step_ids = fields.List(fields.String())
    completed_phases = fields.List(fields.String())
    current_phase = fields.String(allow_none=True)
    progress = fields.Nested(ProgressSchema)
    contact = fields.Nested(ContactSchema)


class PublishedFlowSchema(ma.Schema):
    org = fields.String()
    slug = fields.String()
    title = fields.String()
    version = fields.Integer()
    checksum = fields.String()
    published_at = fields.DateTime()
    definition = fields.Dict()
