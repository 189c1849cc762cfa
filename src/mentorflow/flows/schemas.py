"""Request and response schemas of the learner API, with the typed steps, answers and flows.

Views pass answers, steps and definitions through as they are (``Documented`` fields); the
schemas here type them for the document, one schema per step type.
"""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from mentorflow.flows.document import (
    CONTACT_FIELDS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_SCALE,
    STEP_TYPES,
    takes_answer,
)
from mentorflow.flows.engine import CONTACT_NAME_MAX_LENGTH, PHONE_LENGTH
from mentorflow.platform.openapi import Documented, ProblemSchema, TaggedUnion

PHONE_RE = re.compile(r"^[0-9+\- ]{7,20}$")
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
#: A phone number as the engine accepts it (it trims surrounding spaces first).
PHONE_PATTERN = r"^\s*\+?[0-9][0-9 -]*[0-9]\s*$"


class ContactAnswerSchema(ma.Schema):
    """The answer to a `contact` step: exactly the step's `fields`, each required."""

    name = fields.String(
        validate=validate.Length(min=1, max=CONTACT_NAME_MAX_LENGTH),
        metadata={"description": "The learner's name (trimmed; not blank)."},
    )
    email = fields.Email(metadata={"description": "An email address (stored normalized)."})
    phone = fields.String(
        validate=[
            validate.Length(min=PHONE_LENGTH[0], max=PHONE_LENGTH[1]),
            validate.Regexp(PHONE_PATTERN),
        ],
        metadata={"description": "Digits, spaces, dashes and an optional leading +."},
    )


#: The answer of each answer-taking step type, as a component of the document.
ANSWER_SCHEMAS: dict[str, tuple[str, Any]] = {
    "single_choice": (
        "ChoiceAnswer",
        {"type": "string", "description": "single_choice: the `value` of one of the options."},
    ),
    "multi_choice": (
        "MultiChoiceAnswer",
        {
            "type": "array",
            "items": {"type": "string"},
            "uniqueItems": True,
            "description": "multi_choice: distinct option values, `min_selected` to "
            "`max_selected` of them (stored in the options' order).",
        },
    ),
    "text": (
        "TextAnswer",
        {
            "type": "string",
            "description": "text, long_text: at most `max_length` characters once trimmed; "
            "a blank answer counts as none.",
        },
    ),
    "number": (
        "NumberAnswer",
        {"type": "number", "description": "number: from `min` to `max` (each if set)."},
    ),
    "scale": (
        "ScaleAnswer",
        {"type": "integer", "description": "scale: a whole number from `min` to `max`."},
    ),
    "boolean": ("BooleanAnswer", {"type": "boolean", "description": "boolean: true or false."}),
    "email": (
        "EmailAnswer",
        {
            "type": "string",
            "format": "email",
            "description": "email: an email address (stored normalized).",
        },
    ),
    "phone": (
        "PhoneAnswer",
        {
            "type": "string",
            "minLength": PHONE_LENGTH[0],
            "maxLength": PHONE_LENGTH[1],
            "pattern": PHONE_PATTERN,
            "description": f"phone: {PHONE_LENGTH[0]} to {PHONE_LENGTH[1]} characters once "
            "trimmed: digits, spaces, dashes and an optional leading +.",
        },
    ),
    "contact": ("ContactAnswer", ContactAnswerSchema),
}
ANSWER_SCHEMAS["long_text"] = ANSWER_SCHEMAS["text"]


def _answer_union() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, schema in ANSWER_SCHEMAS.values():
        seen.setdefault(name, schema)
    members = [
        schema if isinstance(schema, type) else {"title": name, **schema}
        for name, schema in seen.items()
    ]
    return {
        "anyOf": members,
        "description": "An answer; its shape depends on the step's type (see each step type).",
    }


def answer_field(**kwargs: Any) -> Documented:
    """Return a field holding one answer of any step type, or null."""
    return Documented(_answer_union(), name="Answer", allow_none=True, **kwargs)


class OptionSchema(ma.Schema):
    value = fields.String(required=True, metadata={"description": "What the answer holds."})
    label = fields.String(required=True, metadata={"description": "What the learner reads."})


_SCALAR = {"type": ["string", "number", "boolean"]}


class ConditionSchema(ma.Schema):
    """`key` and exactly one operator, testing an answer given before the step."""

    class Meta:
        description = (
            "`key` (an earlier step's key) and exactly one operator. A missing answer matches "
            "no comparison; a multi_choice answer `equals` a value it includes."
        )

    key = fields.String(required=True, metadata={"pattern": IDENTIFIER})
    equals = fields.Raw(metadata=_SCALAR)
    not_equals = fields.Raw(metadata=_SCALAR)
    in_ = fields.List(fields.Raw(metadata=_SCALAR), data_key="in")
    gt = fields.Float()
    gte = fields.Float()
    lt = fields.Float()
    lte = fields.Float()
    answered = fields.Boolean()


class NextRuleSchema(ma.Schema):
    """A jump: the first rule whose `when` holds (or that has none) wins."""

    class Meta:
        description = (
            "The first rule whose `when` holds (or that has no `when`) names the next step; "
            "with none, the next step in order follows."
        )

    when = fields.Nested(ConditionSchema)
    goto = fields.String(required=True, metadata={"description": "A later step's id."})


#: What each step type shows and takes, for the document.
STEP_DESCRIPTIONS = {
    "info": "Text to read (`body`); takes no answer: send `answer` absent or null.",
    "video": "A video at `video_url`; takes no answer: send `answer` absent or null.",
    "single_choice": "Choose one of `options`. Answer: `ChoiceAnswer`.",
    "multi_choice": "Choose `min_selected` to `max_selected` of `options`. "
    "Answer: `MultiChoiceAnswer`.",
    "text": "A short text of at most `max_length` characters. Answer: `TextAnswer`.",
    "long_text": "A long text of at most `max_length` characters. Answer: `TextAnswer`.",
    "number": "A number from `min` to `max` (each if set). Answer: `NumberAnswer`.",
    "scale": "A whole number from `min` to `max`, whose ends may be named by `min_label` and "
    "`max_label`. Answer: `ScaleAnswer`.",
    "boolean": "Yes or no. Answer: `BooleanAnswer`.",
    "email": "An email address. Answer: `EmailAnswer`.",
    "phone": "A phone number. Answer: `PhoneAnswer`.",
    "contact": "The learner's contact details named in `fields`, each required; they fill "
    "the session's name, email and phone. Answer: `ContactAnswer`.",
}


def _type_fields(step_type: str) -> dict[str, fields.Field]:
    """Return the fields a step of ``step_type`` has beyond the common ones."""
    options = fields.List(
        fields.Nested(OptionSchema), required=True, validate=validate.Length(min=1)
    )
    if step_type == "video":
        return {"video_url": fields.Url(required=True, schemes={"http", "https"})}
    if step_type == "single_choice":
        return {"options": options}
    if step_type == "multi_choice":
        return {
            "options": options,
            "min_selected": fields.Integer(required=True, validate=validate.Range(min=0)),
            "max_selected": fields.Integer(required=True, validate=validate.Range(min=1)),
        }
    if step_type in DEFAULT_MAX_LENGTH:
        return {
            "max_length": fields.Integer(
                required=True,
                validate=validate.Range(min=1),
                metadata={"description": f"Default {DEFAULT_MAX_LENGTH[step_type]}."},
            )
        }
    if step_type == "number":
        return {"min": fields.Float(), "max": fields.Float()}
    if step_type == "scale":
        low, high = DEFAULT_SCALE
        return {
            "min": fields.Integer(required=True, metadata={"description": f"Default {low}."}),
            "max": fields.Integer(required=True, metadata={"description": f"Default {high}."}),
            "min_label": fields.String(
                metadata={"description": 'What the lowest point means ("Not at all").'}
            ),
            "max_label": fields.String(
                metadata={"description": 'What the highest point means ("Completely").'}
            ),
        }
    if step_type == "contact":
        return {
            "fields": fields.List(
                fields.String(validate=validate.OneOf(CONTACT_FIELDS)),
                required=True,
                validate=validate.Length(min=1, max=len(CONTACT_FIELDS)),
                metadata={"uniqueItems": True},
            )
        }
    return {}


def _step_schema(step_type: str, *, in_session: bool) -> type[ma.Schema]:
    """Return the schema of a step of ``step_type``, with its phase when ``in_session``."""
    answerable = takes_answer(step_type)
    declared: dict[str, Any] = {
        "id": fields.String(required=True, metadata={"pattern": IDENTIFIER}),
        "type": fields.String(required=True, validate=validate.OneOf([step_type])),
        "key": fields.String(
            required=answerable,
            metadata={
                "pattern": IDENTIFIER,
                "description": "Where the answer is kept: `session.answers[key]`.",
            },
        ),
        "prompt": fields.String(required=answerable),
        "body": fields.String(),
        "required": fields.Boolean(
            required=True,
            metadata={"description": "Whether an answer must be given (never for info, video)."},
        ),
        **_type_fields(step_type),
        "chat": fields.Boolean(
            metadata={
                "description": "The player offers a conversation box under the step; its "
                "messages are the session's messages for that step (postSessionMessage)."
            }
        ),
        "next": fields.List(fields.Nested(NextRuleSchema)),
    }
    if in_session:
        declared["phase_id"] = fields.String(required=True)
        declared["phase_title"] = fields.String(required=True)
    meta = type(
        "Meta",
        (),
        {
            # New step fields may come; a client ignores those it does not know.
            "unknown": ma.EXCLUDE,
            "description": f"A `{step_type}` step. {STEP_DESCRIPTIONS[step_type]}"
            + (" The step's phase is `phase_id`, `phase_title`." if in_session else ""),
        },
    )
    camel = "".join(part.title() for part in step_type.split("_"))
    name = f"{camel}Step" if in_session else f"{camel}FlowStep"
    return type(f"{name}Schema", (ma.Schema,), {**declared, "Meta": meta})


STEP_SCHEMAS = {step_type: _step_schema(step_type, in_session=True) for step_type in STEP_TYPES}
FLOW_STEP_SCHEMAS = {
    step_type: _step_schema(step_type, in_session=False) for step_type in STEP_TYPES
}


class PhaseSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    id = fields.String(required=True, metadata={"pattern": IDENTIFIER})
    title = fields.String(required=True)
    steps = fields.List(
        TaggedUnion("FlowStep", FLOW_STEP_SCHEMAS), required=True, validate=validate.Length(min=1)
    )


class FlowDefinitionSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    slug = fields.String(required=True, metadata={"pattern": r"^[a-z0-9][a-z0-9-]{0,79}$"})
    title = fields.String(required=True)
    description = fields.String()
    phases = fields.List(fields.Nested(PhaseSchema), required=True, validate=validate.Length(min=1))


class StartSessionSchema(ma.Schema):
    name = fields.String(validate=validate.Length(min=1, max=200), allow_none=True)
    email = fields.Email(validate=validate.Length(max=320), allow_none=True)
    phone = fields.String(
        validate=validate.Regexp(PHONE_RE, error="must be 7-20 digits, +, spaces or dashes"),
        allow_none=True,
    )
    external_user_id = fields.String(
        validate=validate.Length(min=1, max=200),
        allow_none=True,
        metadata={
            "description": "The org's own id of the user. With a secret key the session is "
            "that learner's; with a learner token it is the token's (or omitted); with a "
            "publishable key it is recorded but the session is no learner's."
        },
    )
    resume = fields.Boolean(
        metadata={
            "description": "With a learner token (or a secret key naming `external_user_id`): "
            "answer 200 with the learner's active session of this flow if there is one, "
            "else start one (201). Never with a publishable key (403). Default false."
        },
    )


class StepSubmissionSchema(ma.Schema):
    step_id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=120),
        metadata={"description": "The step being answered: the session's current step."},
    )
    answer = answer_field(
        metadata={
            "description": "The answer, shaped by the step's type; omit or null for "
            "steps that take none (and to skip an optional step)."
        }
    )


#: How many answers one offline batch may carry.
MAX_BATCH_ITEMS = 100
BATCH_OUTCOMES = ("applied", "replayed", "conflict", "invalid", "skipped")


class StepBatchItemSchema(StepSubmissionSchema):
    idempotency_key = fields.String(
        required=True,
        validate=validate.Length(min=1, max=255),
        metadata={
            "description": "The item's Idempotency-Key, as the single POST's header: the same "
            "key on every retry of this answer."
        },
    )


class StepBatchSchema(ma.Schema):
    items = fields.List(
        fields.Nested(StepBatchItemSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH_ITEMS),
        metadata={"description": "The answers in the order they were given (1 to 100)."},
    )


class StepBatchResultSchema(ma.Schema):
    index = fields.Integer(required=True, metadata={"description": "The item's position."})
    outcome = fields.String(
        required=True,
        validate=validate.OneOf(BATCH_OUTCOMES),
        metadata={
            "description": "applied: taken now; replayed: taken before under this key; "
            "conflict: not the current step, or the session is completed; invalid: the answer "
            "does not fit the step, or the key was used with another answer; skipped: not "
            "looked at, after a conflict or an invalid item."
        },
    )
    status = fields.Integer(
        required=True,
        metadata={
            "description": "The status the single POST would have answered; 424 (Failed "
            "Dependency) for a skipped item."
        },
    )
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={
            "description": "Messages by field of the item (`answer`, `answer.email`, "
            "`step_id`, `idempotency_key`), for a conflict or an invalid item."
        },
    )


class BackSchema(ma.Schema):
    step_id = fields.String(
        required=True,
        validate=validate.Length(min=1, max=120),
        metadata={"description": "A step this session already completed."},
    )


class ProgressSchema(ma.Schema):
    completed = fields.Integer(required=True, metadata={"description": "Steps done."})
    total = fields.Integer(
        required=True, metadata={"description": "Steps on the path the answers lead to."}
    )
    percent = fields.Integer(required=True, validate=validate.Range(min=0, max=100))


class SessionSchema(ma.Schema):
    id = fields.String(required=True)
    org = fields.String(required=True)
    flow = fields.String(required=True)
    flow_version = fields.Integer(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(["active", "completed", "abandoned"])
    )
    current_step_id = fields.String(
        required=True, allow_none=True, metadata={"description": "Null once completed."}
    )
    answers = fields.Dict(
        keys=fields.String(),
        values=answer_field(),
        required=True,
        metadata={"description": "Answers by step key (flat, never nested by phase)."},
    )
    completed_step_ids = fields.List(fields.String(), required=True)
    progress = fields.Nested(ProgressSchema, required=True)
    name = fields.String(required=True, allow_none=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    external_user_id = fields.String(required=True, allow_none=True)
    memory_container = fields.String(required=True)
    version = fields.Integer(
        required=True, metadata={"description": "Grows with each change; the ETag."}
    )
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    completed_at = fields.DateTime(required=True, allow_none=True)


class SessionStateSchema(ma.Schema):
    session = fields.Nested(SessionSchema, required=True)
    step = TaggedUnion(
        "Step",
        STEP_SCHEMAS,
        required=True,
        allow_none=True,
        metadata={"description": "The current step with its phase; null once completed."},
    )


class SessionCreatedSchema(SessionStateSchema):
    token = fields.String(
        required=True,
        metadata={
            "pattern": "^st_",
            "description": "The session token (st_…), shown once: keep it with the id.",
        },
    )


class SessionConflictSchema(ProblemSchema, SessionStateSchema):
    """A 409 problem that carries the session's state, for a stale client to re-render."""


class StepBatchOutcomeSchema(SessionStateSchema):
    results = fields.List(fields.Nested(StepBatchResultSchema), required=True)


class ContactSchema(ma.Schema):
    name = fields.String(required=True, allow_none=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)


class SessionContextSchema(ma.Schema):
    answers = fields.Dict(keys=fields.String(), values=answer_field(), required=True)
    completed_step_ids = fields.List(fields.String(), required=True)
    completed_phases = fields.List(fields.String(), required=True)
    current_phase = fields.String(required=True, allow_none=True)
    progress = fields.Nested(ProgressSchema, required=True)
    contact = fields.Nested(ContactSchema, required=True)
    # By name: MessageSchema lives with the conversations (flows.conversation_schemas).
    messages = fields.List(
        fields.Nested("MessageSchema"),
        required=True,
        metadata={"description": "The session's latest messages (`?messages=N`), oldest first."},
    )
    messages_truncated = fields.Boolean(
        required=True, metadata={"description": "Older messages were left out."}
    )


class PublishedFlowSchema(ma.Schema):
    org = fields.String(required=True)
    slug = fields.String(required=True)
    title = fields.String(required=True)
    version = fields.Integer(required=True)
    checksum = fields.String(
        required=True, metadata={"description": "sha256 of the definition's canonical JSON."}
    )
    published_at = fields.DateTime(required=True)
    definition = Documented(FlowDefinitionSchema, required=True)
