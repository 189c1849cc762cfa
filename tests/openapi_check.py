"""Check the API's real responses against its own OpenAPI document.

Every test client of an app made by ``support.make_app`` passes each ``/v1`` response through
:func:`check_response`: its status must be listed for the operation, its media type and body
must fit the documented content, its headers the documented headers (the required ones
present). A mismatch fails the test that made the request, on either backend.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from typing import Any

from flask import Flask
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from mentorflow.platform.extensions import api

DOCUMENT_PATH = "/v1/openapi.json"
DOCUMENT_URI = "urn:mentorflow:openapi"
#: Where the document itself and other non-operation pages live (not described by it).
UNDESCRIBED = (DOCUMENT_PATH, "/v1/docs")


class ResponseMismatch(AssertionError):
    """A response the OpenAPI document does not describe."""


class OpenApiDocument:
    """An OpenAPI document with cached validators for the schemas it holds."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOCUMENT_URI, resource)
        self._validators: dict[str, OAS31Validator] = {}

    @cached_property
    def paths(self) -> list[tuple[re.Pattern[str], str]]:
        return [
            (
                re.compile("^" + re.sub(r"\\{(\w+)\\}", r"[^/]+", re.escape(template)) + "$"),
                template,
            )
            for template in self.document["paths"]
        ]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow a local ``$ref`` (as in responses and headers)."""
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def validator(self, pointer: str) -> OAS31Validator:
        """Return a validator of the schema at JSON ``pointer`` in the document."""
        if pointer not in self._validators:
            self._validators[pointer] = OAS31Validator(
                {"$ref": f"{DOCUMENT_URI}#{pointer}"},
                registry=self.registry,
                format_checker=oas31_format_checker,
            )
        return self._validators[pointer]

    def errors(self, pointer: str, instance: Any) -> list[str]:
        """Return what is wrong with ``instance`` per the schema at ``pointer``."""
        found = self.validator(pointer).iter_errors(instance)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in found]

    def template(self, path: str) -> str | None:
        """Return the path template of the document that ``path`` matches, if any."""
        return next((template for pattern, template in self.paths if pattern.match(path)), None)


def _pointer(*parts: str) -> str:
    return "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _problem_errors(document: OpenApiDocument, response: TestResponse) -> list[str]:
    if response.mimetype != "application/problem+json":
        return [f"an error of status {response.status_code} is {response.mimetype!r}"]
    return document.errors("/components/schemas/Problem", response.get_json())


def check_response(document: OpenApiDocument, method: str, path: str, response: Any) -> None:
    """Raise :class:`ResponseMismatch` unless the document describes ``response``."""
    if method in ("OPTIONS", "HEAD") or not path.startswith("/v1/") or path in UNDESCRIBED:
        return
    status = response.status_code
    template = document.template(path)
    operation = document.document["paths"].get(template, {}).get(method.lower())
    label = f"{method} {template or path} → {status}"
    if operation is None:
        # Not an operation (an unknown path, a method a path lacks): a plain problem.
        errors = _problem_errors(document, response) if status >= 400 else []
        if errors:
            raise ResponseMismatch(f"{label}: {errors}")
        return
    responses = operation["responses"]
    if str(status) not in responses:
        raise ResponseMismatch(
            f"{label}: status not documented (documented: {', '.join(sorted(responses))}); "
            f"body: {response.get_data(as_text=True)[:300]}"
        )
    raw = responses[str(status)]
    # The pointer of the response itself: a shared component, or inline in the operation.
    where = (
        raw["$ref"].removeprefix("#")
        if "$ref" in raw
        else _pointer("paths", template, method.lower(), "responses", str(status))
    )
    documented = document.resolve(raw)
    problems = _content_errors(document, where, documented, response)
    problems += _header_errors(document, documented, response)
    if problems:
        raise ResponseMismatch(f"{label}: " + "; ".join(problems))


def _content_errors(
    document: OpenApiDocument, where: str, documented: dict[str, Any], response: Any
) -> list[str]:
    content = documented.get("content")
    body = response.get_data()
    if not content:
        return [f"a body where none is documented: {body[:200]!r}"] if body else []
    if response.mimetype not in content:
        return [f"media type {response.mimetype!r}, documented: {sorted(content)}"]
    if response.mimetype not in ("application/json", "application/problem+json"):
        return []
    pointer = where + _pointer("content", response.mimetype, "schema")
    return document.errors(pointer, json.loads(body))


def _header_errors(
    document: OpenApiDocument, documented: dict[str, Any], response: Any
) -> list[str]:
    errors = []
    for name, header in documented.get("headers", {}).items():
        header = document.resolve(header)
        value = response.headers.get(name)
        if value is None:
            if header.get("required"):
                errors.append(f"header {name} is missing")
            continue
        schema = header.get("schema", {})
        if schema.get("type") == "integer":
            if not re.fullmatch(r"[0-9]+", value):
                errors.append(f"header {name} is {value!r}, not a whole number")
        elif "enum" in schema and value not in schema["enum"]:
            errors.append(f"header {name} is {value!r}, not one of {schema['enum']}")
        elif "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"header {name} is {value!r}, not matching {schema['pattern']}")
    return errors


def app_document(app: Flask) -> OpenApiDocument:
    """Return the document the app serves, made once per app.

    Made as its view makes it rather than fetched: a request would count against the rate
    limit of the test that is running.
    """
    document = app.extensions.get("test_openapi_document")
    if document is None:
        served = json.loads(app.json.dumps(api.spec.to_dict()))
        document = app.extensions["test_openapi_document"] = OpenApiDocument(served)
    return document


def check_app_response(app: Flask, response: Any) -> None:
    """Check a test client's response (and the redirects before it) against the document."""
    for each in [*getattr(response, "history", ()), response]:
        request = each.request
        if request.path.startswith("/v1/") and request.path not in UNDESCRIBED:
            check_response(app_document(app), request.method, request.path, each)
