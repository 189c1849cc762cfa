"""RFC 9457 problem+json errors for the API.

Views call :func:`abort` (flask-smorest's, re-exported) with a ``message`` and, where it helps
a client recover, ``errors`` per field, ``extra`` members or ``headers``; the API's error
handler renders every HTTP error under ``/v1`` and ``/healthz`` as problem+json. Console pages
keep Flask's HTML errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask_smorest
from flask import Request, Response, json, request
from flask_smorest import Api
from flask_smorest import abort as abort
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_JSON = "application/problem+json"
API_PREFIXES = ("/v1/", "/healthz")

# Machine-readable problem types for the outcomes a client is expected to branch on.
PROBLEM_TYPES = {
    "step-conflict": "urn:mentorflow:problem:step-conflict",
    "session-closed": "urn:mentorflow:problem:session-closed",
    "validation": "urn:mentorflow:problem:validation",
    "idempotency-key-reused": "urn:mentorflow:problem:idempotency-key-reused",
    "version-mismatch": "urn:mentorflow:problem:version-mismatch",
    "session-erased": "urn:mentorflow:problem:session-erased",
}


def is_api_path(path: str) -> bool:
    """Tell whether ``path`` is the API's (``/v1`` itself, anything under it, ``/healthz``)."""
    return path == "/v1" or path.startswith(API_PREFIXES)


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Flatten nested marshmallow/webargs messages into ``{"a.b": ["..."]}``."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, name))
        return flat
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "_schema": list(messages)}
    if isinstance(messages, list):
        flat = {}
        for index, value in enumerate(messages):
            flat.update(flatten_errors(value, f"{prefix}[{index}]"))
        return flat
    return {prefix or "_schema": [str(messages)]}


def _field_errors(data: dict[str, Any]) -> dict[str, list[str]] | None:
    if "errors" in data:
        return data["errors"]
    messages = data.get("messages")
    if not messages:
        return None
    flat: dict[str, list[str]] = {}
    for location, fields in messages.items():
        # The body is what clients think of as "the fields"; other locations keep their name.
        flat.update(flatten_errors(fields, "" if location == "json" else location))
    return flat


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    problem: str | None = None,
    errors: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPES.get(problem, "about:blank") if problem else "about:blank",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class ProblemApi(Api):
    """flask-smorest ``Api`` whose errors are problem+json."""

    def handle_http_exception(self, error: HTTPException) -> Any:
        if not is_api_path(request.path):
            return error
        data = getattr(error, "data", None) or {}
        headers = dict(data.get("headers") or {})
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            headers.setdefault("Allow", ", ".join(error.valid_methods))
        errors = _field_errors(data)
        problem = data.get("problem") or ("validation" if error.code == 422 and errors else None)
        detail = data.get("message")
        if detail is None and error.code == 422 and errors:
            detail = "The request has invalid fields: " + ", ".join(sorted(errors)) + "."
        if detail is None:
            detail = error.description
        return problem_response(
            error.code or 500,
            detail,
            problem=problem,
            errors=errors,
            extra=data.get("extra"),
            headers=headers,
        )


class BodyParser(FlaskParser):
    """webargs' Flask parser, reading a JSON body through ``request.get_json``.

    The body is decoded once per request (the edge's text check and the idempotency
    fingerprint reuse it) by the app's bounded JSON provider, and what it refuses is a 400
    problem saying why, not a 500.
    """

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return webargs_core.missing
        if req.get_data(cache=True) == b"":
            return webargs_core.missing
        try:
            return req.get_json(force=True)
        except BadRequest as exc:
            abort(400, message=f"The request body is not valid JSON: {_decode_error(exc)}.")


def _decode_error(exc: BaseException) -> BaseException:
    """Return the decoder's ValueError behind Flask's generic BadRequest (or ``exc``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ValueError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's ``Blueprint`` with the bounded body parser, and documenting decorators
    that document and nothing more.

    flask-smorest's ``doc`` and ``alt_response`` each wrap the view in a function that only
    calls it (through ``ensure_sync``, which matters to async views; the API has none). A step
    commit documents ten problem responses, so eleven call layers ran on every request for
    the sake of the document. These write the same ``_apidoc`` and return the view itself.
    """

    ARGUMENTS_PARSER = BodyParser()

    def doc(self, **kwargs: Any) -> Callable[[Any], Any]:
        return _document_only(super().doc(**kwargs))

    def alt_response(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        return _document_only(super().alt_response(*args, **kwargs))


def _document_only(decorator: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Return ``decorator`` keeping the documentation it gives a view, not its wrapper."""

    def decorate(view: Any) -> Any:
        view._apidoc = decorator(view)._apidoc
        return view

    return decorate
