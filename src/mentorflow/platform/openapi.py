"""The shared parts of the generated OpenAPI document: credentials, headers and problems.

Views declare their schemas, statuses and headers with flask-smorest's decorators, naming the
components registered here (:func:`register_components`); :class:`CommonHeadersPlugin` adds
the headers every API response carries; :class:`TaggedUnion` documents a value that is one of
several schemas, told apart by a property. Nothing of the document is written by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import marshmallow as ma
from apispec import APISpec, BasePlugin
from flask_smorest.utils import prepare_response
from marshmallow import fields

from mentorflow.platform.errors import PROBLEM_JSON, PROBLEM_TYPES, ProblemApi

#: What each problem type means and what a client does about it (the document lists them).
PROBLEM_MEANINGS = {
    "step-conflict": "409: the step is not the session's current step (a stale tab or a "
    "double click); the body's `session` and `step` are what to re-render.",
    "session-closed": "409: the session is completed and takes no more answers; the body "
    "carries its final `session` and `step` (null).",
    "validation": "422: fields of the request are invalid; `errors` maps each field path "
    "(`answer`, `answer.email`, `headers.Idempotency-Key`, `query.format`) to its messages.",
    "idempotency-key-reused": "422: the Idempotency-Key was already used with another body; "
    "send a new key for a new request.",
    "version-mismatch": "412: If-Match names another version of the session; re-read it.",
    "session-erased": "409: the session was erased; it takes no more messages.",
}

#: The security scheme of each credential kind (``CredentialKind`` values) in the document:
#: its name, the token's prefix and what the credential may do.
SECURITY_SCHEMES: dict[str, tuple[str, str, str]] = {
    "publishable": (
        "publishableKey",
        "pk",
        "A publishable key, `pk_…`, safe to ship in a browser: reads the org's published "
        "flows and starts sessions.",
    ),
    "secret": (
        "secretKey",
        "sk",
        "A secret key, `sk_…`, for servers only: everything in its org (any session, jobs).",
    ),
    "session": (
        "sessionToken",
        "st",
        "A session token, `st_…`, returned once by startSession: reads and advances that "
        "session only. It stops working MENTORFLOW_SESSION_TOKEN_LIFETIME seconds after the "
        "session completes or is abandoned.",
    ),
    "learner": (
        "learnerToken",
        "lt",
        "A learner token, `lt_…`, minted by the org's backend (mintLearnerToken) for one of its "
        "users on a device: reads that learner, lists, reads and advances their sessions and "
        "starts new ones as them (with `resume`). Another learner's session is a 404. It "
        "expires (`expires_at`) and is revoked by revokeLearnerTokens.",
    ),
}

#: Request headers, registered as parameters and named in ``@blp.doc(parameters=[...])``.
REQUEST_HEADERS: dict[str, dict[str, Any]] = {
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "description": "Any unique string per logical request (a UUID). A retry with the same "
        "key and body gets the first response again, with `Idempotent-Replayed: true`; the "
        "same key with another body is a 422 `idempotency-key-reused`.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "example": "7f1c2a9e-5b1d-4c1e-9a57-3f0e6c2d8b41",
    },
    "IfMatch": {
        "name": "If-Match",
        "description": 'The session\'s ETag (`"<version>"`) the client rendered from; another '
        "version is a 412 `version-mismatch`. A bare number is accepted too.",
        "schema": {"type": "string"},
        "example": '"3"',
    },
    "IfNoneMatch": {
        "name": "If-None-Match",
        "description": "The ETag the client holds: a 304 with no body when it is still current.",
        "schema": {"type": "string"},
        "example": '"3"',
    },
}

#: Response headers, by component name: the header each documents and its description.
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "SessionETag": {
        "description": 'The session\'s version, quoted (`"3"`): send it as If-Match when '
        "answering and as If-None-Match when refreshing.",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
        "example": '"3"',
    },
    "FlowETag": {
        "description": 'The published version and its checksum (`"2-9f86d081884c7d65"`): '
        "send it as If-None-Match to get a 304 while the flow is unchanged.",
        "schema": {"type": "string"},
        "example": '"2-9f86d081884c7d65"',
    },
    "Location": {
        "description": "The URL of the new session (getSession).",
        "schema": {"type": "string", "format": "uri-reference"},
        "example": "/v1/orgs/demo/sessions/s_8Jc2kq0Qm1xZr7Yb",
    },
    "IdempotentReplayed": {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same Idempotency-Key; absent otherwise.",
        "schema": {"type": "string", "enum": ["true"]},
        "example": "true",
    },
    "RetryAfter": {
        "description": "Seconds to wait before the next request.",
        "schema": {"type": "integer", "minimum": 0},
        "example": 12,
    },
    "WWWAuthenticate": {
        "description": "The authentication scheme: a bearer token.",
        "schema": {"type": "string"},
        "example": 'Bearer realm="mentorflow"',
    },
    "ContentDisposition": {
        "description": "An attachment named `<org>-<flow>-<job>.csv` (or `.jsonl`).",
        "schema": {"type": "string"},
        "example": 'attachment; filename="demo-rafael-tats-7.csv"',
    },
    "RateLimit": {
        "description": "The client's remaining quota under the API limit and the seconds "
        "until it resets (IETF draft-ietf-httpapi-ratelimit-headers). Sent while the API "
        "limit is on and its counters answer.",
        "schema": {"type": "string"},
        "example": '"api";r=1187;t=42',
    },
    "RateLimitPolicy": {
        "description": "The API limit this request counts under: requests per window of "
        "seconds, per client address (IETF draft-ietf-httpapi-ratelimit-headers). Sent with "
        "`RateLimit`.",
        "schema": {"type": "string"},
        "example": '"api";q=1200;w=60',
    },
    "XRequestId": {
        "description": "The request's id: the client's own `X-Request-Id` when it sent a "
        "sensible one, else a generated one. Logged with the request; quote it in reports.",
        "schema": {"type": "string"},
        "example": "0b9f6c1e8d2a4f7b9c3e5a1d7f2b8c4e",
    },
}
#: Headers on every API response (success or problem), by header name.
COMMON_HEADERS = {
    "RateLimit": "RateLimit",
    "RateLimit-Policy": "RateLimitPolicy",
    "X-Request-Id": "XRequestId",
}
#: Headers a problem of that status always carries, beyond the common ones.
PROBLEM_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "WWWAuthenticate"},
    429: {"Retry-After": "RetryAfter"},
}
#: The headers that are always present on a response that documents them.
ALWAYS_SENT = frozenset(
    {
        "SessionETag",
        "FlowETag",
        "Location",
        "RetryAfter",
        "WWWAuthenticate",
        "ContentDisposition",
        "XRequestId",
    }
)

#: An example problem of each status the API answers with, for the document.
PROBLEM_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"detail": "The request body is not valid JSON: Expecting value: line 1 column 1."},
    401: {
        "detail": "Send an API key, learner token or session token as "
        "'Authorization: Bearer <token>'."
    },
    403: {"detail": "This endpoint needs a secret key; a publishable credential was sent."},
    404: {"detail": "No session 's_8Jc2kq0Qm1xZr7Yb'."},
    409: {"detail": "Job 7 is running; its file is not ready."},
    410: {"detail": "The file of job 7 has been deleted; export again."},
    412: {
        "problem": "version-mismatch",
        "detail": "The session is at version 4; If-Match did not match.",
    },
    413: {"detail": "The data value transmitted exceeds the capacity limit."},
    415: {"detail": "Send the body as JSON with 'Content-Type: application/json'."},
    422: {
        "problem": "validation",
        "detail": "The request has invalid fields: email.",
        "errors": {"email": ["Not a valid email address."]},
    },
    429: {"detail": "Too many requests: the limit is 1200 per 1 minute. Retry in 12 s."},
}


def problem_example(status: int, **members: Any) -> dict[str, Any]:
    """Return an example problem body of ``status`` (``problem`` names its type)."""
    members = {**PROBLEM_EXAMPLES.get(status, {}), **members}
    problem = members.pop("problem", None)
    return {
        "type": PROBLEM_TYPES[problem] if problem else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        **members,
    }


def _problem_types_text() -> str:
    lines = [
        f"- `{urn}`: {PROBLEM_MEANINGS.get(name, name)}" for name, urn in PROBLEM_TYPES.items()
    ]
    return (
        "A URI naming the kind of problem: `about:blank` when the status says it all, else "
        "one of these (new ones may be added; treat an unknown one like `about:blank`):\n"
        + "\n".join(lines)
    )


class ProblemSchema(ma.Schema):
    """An RFC 9457 problem, served as application/problem+json."""

    type = fields.String(
        required=True, metadata={"format": "uri", "description": _problem_types_text()}
    )
    title = fields.String(
        required=True, metadata={"description": "The status's phrase, e.g. 'Conflict'."}
    )
    status = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    detail = fields.String(required=True, metadata={"description": "What went wrong, for people."})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={
            "description": "Messages per field path (422 only): `email`, `answer.phone`, "
            "`headers.Idempotency-Key`, `query.format`, `_schema` for the body as a whole."
        },
    )


class Documented(fields.Raw):
    """A value loaded and dumped as is, documented by ``schema``.

    ``schema`` is a marshmallow schema class (documented as its component), or a JSON schema
    registered as the component ``name``, in which marshmallow schema classes become references.
    """

    def __init__(self, schema: Any, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(schema, dict) and not name:
            raise ValueError("a JSON schema needs the name of its component")
        self.documented_schema, self.component_name = schema, name


class TaggedUnion(Documented):
    """A value that is one of ``schemas``, told apart by its ``tag`` property; dumped as is.

    Documented as the component ``name``: a ``oneOf`` of the schemas with a discriminator.
    """

    def __init__(
        self, name: str, schemas: Mapping[str, type[ma.Schema]], *, tag: str = "type", **kwargs
    ) -> None:
        union = {
            "oneOf": list(schemas.values()),
            "discriminator": {"propertyName": tag, "mapping": dict(schemas)},
        }
        super().__init__(union, name=name, **kwargs)


def _resolve_schemas(converter: Any, value: Any) -> Any:
    """Replace the marshmallow schema classes in a JSON schema by references to them."""
    if isinstance(value, type) and issubclass(value, ma.Schema):
        return converter.resolve_nested_schema(value)
    if isinstance(value, dict):
        resolved = {key: _resolve_schemas(converter, item) for key, item in value.items()}
        mapping = resolved.get("discriminator", {}).get("mapping")
        if mapping:  # a discriminator maps values to references, not schemas
            resolved["discriminator"]["mapping"] = {k: v["$ref"] for k, v in mapping.items()}
        return resolved
    if isinstance(value, list):
        return [_resolve_schemas(converter, item) for item in value]
    return value


def documented_to_properties(self: Any, field: fields.Field, ret: dict, **_: Any) -> dict:
    """Document a :class:`Documented` field as a reference to its schema (or null)."""
    if not isinstance(field, Documented):
        return {}
    schema = field.documented_schema
    if isinstance(schema, dict):
        components = self.spec.components
        if field.component_name not in components.schemas:
            components.schema(field.component_name, _resolve_schemas(self, schema))
        ref = {"$ref": f"#/components/schemas/{field.component_name}"}
    else:
        ref = self.resolve_nested_schema(schema)
    ret.pop("type", None)
    if field.allow_none:
        return {"anyOf": [ref, {"type": "null"}]}
    return ref


class CommonHeadersPlugin(BasePlugin):
    """Add the headers every API response carries to each response of each operation."""

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **_: Any):
        for operation in (operations or {}).values():
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict) and "$ref" not in response:
                    headers = response.setdefault("headers", {})
                    for name, component in COMMON_HEADERS.items():
                        headers.setdefault(name, component)


def security(*kinds: str) -> list[dict[str, list[str]]]:
    """Return the ``security`` of an operation that takes any of these credential kinds."""
    return [{SECURITY_SCHEMES[kind][0]: []} for kind in kinds]


def problem_response_name(status: int) -> str:
    """Return the component name of the plain problem response of ``status``."""
    return HTTPStatus(status).name


def problems(blueprint: Any, *statuses: int) -> Callable[[Any], Any]:
    """Return a decorator documenting the plain problem responses of ``statuses``."""

    def decorate(view: Any) -> Any:
        for status in statuses:
            view = blueprint.alt_response(status, response=problem_response_name(status))(view)
        return view

    return decorate


def problem(
    blueprint: Any,
    status: int,
    description: str,
    *,
    examples: dict[str, dict[str, Any]],
    schema: Any = ProblemSchema,
) -> Callable[[Any], Any]:
    """Return a decorator documenting a problem response of ``status`` with named examples."""
    return blueprint.alt_response(
        status,
        schema=schema,
        content_type=PROBLEM_JSON,
        description=description,
        examples={name: {"value": value} for name, value in examples.items()},
        headers=dict(PROBLEM_HEADERS.get(status, {})),
    )


def register_components(spec: APISpec) -> None:
    """Register the security schemes, request and response headers of the document."""
    for name, prefix, description in SECURITY_SCHEMES.values():
        spec.components.security_scheme(
            name,
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": f"{prefix}_…",
                "description": description + f" Sent as `Authorization: Bearer {prefix}_…`.",
            },
        )
    for name, parameter in REQUEST_HEADERS.items():
        spec.components.parameter(name, "header", dict(parameter), lazy=True)
    for name, header in RESPONSE_HEADERS.items():
        spec.components.header(name, {**header, "required": name in ALWAYS_SENT}, lazy=True)


def register_problem_responses(spec: APISpec) -> None:
    """Register a lazy problem+json response component for every error status."""
    for status in HTTPStatus:
        if status < 400:
            continue
        headers = {**COMMON_HEADERS, **PROBLEM_HEADERS.get(status, {})}
        example = problem_example(status)
        example.setdefault("detail", status.description or status.phrase)
        response = {
            "description": f"{status.phrase} (problem+json)",
            "schema": ProblemSchema,
            "example": example,
            "headers": headers,
        }
        prepare_response(response, spec, PROBLEM_JSON)
        spec.components.response(status.name, response, lazy=True)


API_DESCRIPTION = """\
Learners walk an org's published flows as **server-side sessions**: every answer is one POST
that validates it and commits it with the new position in one transaction; a page refresh is a
GET. A client keeps only the session's id and token.

**Credentials** (each operation's `security` names the kinds it takes), all sent as
`Authorization: Bearer …`: a publishable key `pk_…` (browsers: read published flows, start
sessions), a secret key `sk_…` (servers: everything in the org) and a session's own token
`st_…` (returned once by startSession: that session only), and a learner token `lt_…`
(minted by the org's backend for one of its users: that learner's sessions, on any device).
Another org's flow, session, learner or job is a 404, like one that does not exist.

**Errors** are RFC 9457 problems (`application/problem+json`): `type`, `title`, `status`,
`detail`, and for a 422 `errors` per field path. A 409 on a step also carries the `session`
and `step` to re-render. The problem `type`s are listed on the `Problem` schema.

**Retries and stale tabs**: a step sent with an `Idempotency-Key` is answered once; a retry
with the same key and body replays the first response (`Idempotent-Replayed: true`). Send the
session's `ETag` as `If-Match` to refuse an answer to a session that moved on (412), and as
`If-None-Match` on a refresh (304). Past the rate limit the answer is a 429 with
`Retry-After`.

Step types, their fields and answer shapes are the `Step` union and the `*Answer` schemas;
`docs/api.md` in the repository walks through them with examples.
"""

#: The document's own settings: what it describes, where, and under which license.
SPEC_OPTIONS: dict[str, Any] = {
    "info": {
        "description": API_DESCRIPTION,
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "servers": [
        {"url": "/", "description": "This installation (where the document is served)"},
        {"url": "http://127.0.0.1:5000", "description": "`make run` on a developer machine"},
    ],
}


class DocumentedApi(ProblemApi):
    """The problem+json API whose document names credentials, headers and problems."""

    ERROR_SCHEMA = ProblemSchema
    # Every status an operation answers with is listed; no catch-all "default".
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _init_spec(self, *, extra_plugins: Any = None, **options: Any) -> None:
        super()._init_spec(
            extra_plugins=[*(extra_plugins or ()), CommonHeadersPlugin()],
            **{**SPEC_OPTIONS, **options},
        )
        self.ma_plugin.converter.add_attribute_function(documented_to_properties)

    def _register_responses(self) -> None:
        # The headers first: a response refers to them as it is registered.
        register_components(self.spec)
        register_problem_responses(self.spec)

    def _register_pagination_header(self) -> None:
        # No endpoint pages with flask-smorest's header: leave its schema out of the document.
        pass
