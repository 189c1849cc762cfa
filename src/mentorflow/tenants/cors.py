"""Per-org CORS: each org lists the browser origins allowed to call its API."""

from __future__ import annotations

from flask import Response, current_app, request

from mentorflow.tenants.tenancy import find_org

ALLOWED_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, X-Request-Id"
)
#: Response headers a browser client may read (beyond the CORS-safelisted ones).
EXPOSED_HEADERS = (
    "ETag, Idempotent-Replayed, Retry-After, Location, WWW-Authenticate, "
    "RateLimit, RateLimit-Policy, X-Request-Id"
)


def _allowed_origin(org_slug: str | None) -> str | None:
    origin = request.headers.get("Origin")
    if not origin or not org_slug:
        return None
    org = find_org(org_slug)
    if org is None or origin.rstrip("/").lower() not in org.allowed_origins:
        return None
    return origin


def preflight_response(org_slug: str | None) -> Response:
    """Answer a CORS preflight without asking for credentials (browsers send none)."""
    response = current_app.response_class(status=204)
    origin = _allowed_origin(org_slug)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    response.vary.add("Origin")
    return response


def add_cors_headers(response: Response, org_slug: str | None) -> Response:
    """Let an allowed origin read the response, errors included."""
    origin = _allowed_origin(org_slug)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    response.vary.add("Origin")
    return response
