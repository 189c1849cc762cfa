"""The request's credential: an org's API key, a learner's token or a learner session's token."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Flask, Response, after_this_request, current_app, g, request

from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.errors import abort
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import ApiKey

SESSION_TOKEN_PREFIX = "st"
LEARNER_TOKEN_PREFIX = "lt"
_TOKEN_OWNER = "mentorflow.session_token_owner"
_LEARNER_TOKEN_OWNER = "mentorflow.learner_token_owner"
#: Looks up (session id, org id) by a session token's digest.
TokenOwner = Callable[[str], tuple[str, int] | None]
#: Looks up the learner a live (unexpired, unrevoked) learner token opens by its digest.
LearnerTokenOwner = Callable[[str], "LearnerIdentity | None"]
#: How stale ``api_keys.last_used_at`` may get before a request refreshes it.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class CredentialKind(enum.StrEnum):
    PUBLISHABLE = "publishable"
    SECRET = "secret"
    SESSION = "session"
    LEARNER = "learner"


@dataclass(frozen=True)
class LearnerIdentity:
    """The learner a learner token opens: (org, the org's own user id)."""

    org_id: int
    learner_id: int
    external_user_id: str


@dataclass(frozen=True)
class Credential:
    """Who is calling: an org's API key, a learner's token, or one learner session's token."""

    kind: CredentialKind
    #: None for a session token not yet matched against its session (see ``session_token``).
    org_id: int | None
    key_id: int | None = None
    token_hash: str | None = None
    #: The learner of a learner token.
    learner: LearnerIdentity | None = None


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unauthorized(detail: str) -> None:
    abort(401, message=detail, headers={"WWW-Authenticate": 'Bearer realm="mentorflow"'})


def authenticate() -> Credential:
    """Return the request's credential, cached on ``g``; 401 if missing, unknown or revoked."""
    if "credential" in g:
        return g.credential
    token = _bearer_token()
    if token is None:
        _unauthorized(
            "Send an API key, learner token or session token as 'Authorization: Bearer <token>'."
        )
    g.credential = _resolve(token)
    return g.credential


def _resolve(token: str) -> Credential:
    digest = hash_secret(token)
    if token.startswith(f"{SESSION_TOKEN_PREFIX}_"):
        # Checked against the session row the endpoint loads anyway: no query of its own on
        # the hot path. See ``check_session_token``.
        return Credential(CredentialKind.SESSION, org_id=None, token_hash=digest)
    if token.startswith(("pk_", "sk_")):
        key = db.session.execute(
            sa.select(
                ApiKey.id, ApiKey.org_id, ApiKey.kind, ApiKey.revoked_at, ApiKey.last_used_at
            ).where(ApiKey.key_hash == digest)
        ).first()
        if key is None or key.revoked_at is not None:
            _unauthorized("The API key is not valid or has been revoked.")
        _touch_key(key.id, key.last_used_at)
        return Credential(CredentialKind(str(key.kind)), org_id=key.org_id, key_id=key.id)
    if token.startswith(f"{LEARNER_TOKEN_PREFIX}_"):
        learner = current_app.extensions[_LEARNER_TOKEN_OWNER](digest)
        if learner is None:
            _unauthorized("The learner token is not valid: unknown, expired or revoked.")
        return Credential(
            CredentialKind.LEARNER, org_id=learner.org_id, token_hash=digest, learner=learner
        )
    _unauthorized("Unknown token format: expected pk_…, sk_…, lt_… or st_….")
    raise AssertionError("unreachable")


def _touch_key(key_id: int, last_used_at: datetime | None) -> None:
    now = utcnow()
    if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def record_use() -> None:
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(
                sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)
            )

    # After the response is sent, in a transaction of its own: the request's transaction may
    # be read-only or rolled back, and on SQLite it may hold the write lock until it ends.
    after_this_request(lambda response: _on_close(response, record_use))


def _on_close(response: Response, callback: Callable[[], None]) -> Response:
    response.call_on_close(callback)
    return response


def init_credentials(
    app: Flask, *, session_token_owner: TokenOwner, learner_token_owner: LearnerTokenOwner
) -> None:
    """Tell the credential checks how to find the session a ``st_`` token opens and the
    learner an ``lt_`` token opens.

    Sessions and learners belong to the flows package, above this one: the app factory hands
    the lookups in.
    """
    app.extensions[_TOKEN_OWNER] = session_token_owner
    app.extensions[_LEARNER_TOKEN_OWNER] = learner_token_owner


def token_owner(token_hash: str) -> tuple[str, int] | None:
    """Return (session id, org id) of the session a token opens, if any."""
    return current_app.extensions[_TOKEN_OWNER](token_hash)


def session_token_expired(closed_at: datetime | None) -> bool:
    """Return whether the token of a session closed at ``closed_at`` has outlived its lifetime.

    A token works while its session is open, and ``MENTORFLOW_SESSION_TOKEN_LIFETIME`` seconds
    after the session completed or was abandoned.
    """
    if closed_at is None:
        return False
    if closed_at.tzinfo is None:
        closed_at = closed_at.replace(tzinfo=UTC)
    lifetime = timedelta(seconds=int(current_app.config["SESSION_TOKEN_LIFETIME"]))
    return utcnow() - closed_at > lifetime


def check_session_token(
    credential: Credential,
    session_token_hash: str | None,
    org_id: int,
    *,
    closed_at: datetime | None = None,
) -> None:
    """Accept a session token only for its own session: 401 if unknown or expired, 404 if
    another's. ``closed_at``: when the session completed or was abandoned, if it did."""
    if credential.token_hash == session_token_hash:
        if session_token_expired(closed_at):
            _unauthorized("The session token is not valid.")
        return
    owner = token_owner(credential.token_hash or "")
    if owner is None:
        _unauthorized("The session token is not valid.")
    abort(404, message="No such session.")


_CREDENTIAL_NAMES = {
    CredentialKind.SESSION: "the session's token",
    CredentialKind.LEARNER: "a learner token",
}


def require(*kinds: CredentialKind) -> Credential:
    """Return the credential if it is one of ``kinds``, else 403 (404 for another org's)."""
    credential = authenticate()
    if credential.kind not in kinds:
        if credential.kind == CredentialKind.SESSION:
            owner = token_owner(credential.token_hash or "")
            if owner is None:
                _unauthorized("The session token is not valid.")
            if owner[1] != g.org.id:
                abort(404, message="Not found.")
        allowed = " or ".join(_CREDENTIAL_NAMES.get(kind, f"a {kind} key") for kind in kinds)
        abort(
            403, message=f"This endpoint needs {allowed}; a {credential.kind} credential was sent."
        )
    return credential


def credential_is_live(credential: Credential) -> bool:
    """Return whether ``credential`` still works: not revoked, not expired, not replaced.

    For what outlives the request that checked it (a stream).
    """
    if credential.kind in (CredentialKind.PUBLISHABLE, CredentialKind.SECRET):
        key = db.session.execute(
            sa.select(ApiKey.revoked_at).where(ApiKey.id == credential.key_id)
        ).first()
        return key is not None and key.revoked_at is None
    if credential.kind == CredentialKind.LEARNER:
        owner = current_app.extensions[_LEARNER_TOKEN_OWNER](credential.token_hash or "")
        return owner is not None
    return token_owner(credential.token_hash or "") is not None
