"""Operations on orgs, staff and API keys. They flush; the caller commits."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from mentorflow.platform.config import MAX_DURATION, MIN_ABANDON_AFTER
from mentorflow.platform.crypto import display_prefix, generate_secret, hash_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import ApiKey, KeyKind, Membership, Org, Role, StaffUser

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$")
# ASCII digits only (``\d`` would take "²", which int() refuses), and few of them: a longer
# number is no duration and would only reach int()'s digit limit.
DURATION_RE = re.compile(r"^(\d{1,12})\s*([smhdw]?)$", re.ASCII)
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: At most this many CORS origins per org, when listed in the console.
MAX_ORIGINS = 50


class TenantError(ValueError):
    """A tenant operation was refused; the message says why, for people."""


def get_org(slug: str) -> Org:
    """Return the org with ``slug`` or raise ``TenantError``."""
    org = db.session.scalars(sa.select(Org).where(Org.slug == slug)).first()
    if org is None:
        raise TenantError(f"no organization '{slug}'")
    return org


def create_org(slug: str, name: str) -> Org:
    """Create an org with default settings."""
    if not SLUG_RE.match(slug):
        raise TenantError(f"slug '{slug}' must be lowercase letters, digits and dashes")
    if db.session.scalars(sa.select(Org.id).where(Org.slug == slug)).first() is not None:
        raise TenantError(f"organization '{slug}' already exists")
    org = Org(slug=slug, name=name, settings={"allowed_origins": []})
    db.session.add(org)
    db.session.flush()
    return org


def parse_duration(
    text: str, *, minimum: int = 1, maximum: int = MAX_DURATION, what: str = "duration"
) -> int:
    """Return seconds for ``30m``, ``12h``, ``7d``, ``2w`` or a plain number of seconds.

    Raise ``TenantError`` naming ``what`` unless the result is within ``minimum``..``maximum``.
    """
    text = text.strip().lower()
    match = DURATION_RE.match(text)
    if not match:
        raise TenantError(f"{what} '{text}' must look like 30m, 12h, 7d or 2w")
    return check_duration(
        int(match.group(1)) * DURATION_UNITS[match.group(2)],
        minimum=minimum,
        maximum=maximum,
        what=what,
    )


def check_duration(
    seconds: int, *, minimum: int = 1, maximum: int = MAX_DURATION, what: str = "duration"
) -> int:
    """Return ``seconds`` if within ``minimum``..``maximum``, else raise ``TenantError``."""
    if seconds < minimum:
        raise TenantError(f"{what} must be at least {format_duration(minimum)}")
    if seconds > maximum:
        raise TenantError(f"{what} must be at most {format_duration(maximum)}")
    return seconds


def parse_abandon_after(text: str) -> int:
    """Return the seconds of an abandonment TTL as staff write it (console and CLI)."""
    return parse_duration(
        text, minimum=MIN_ABANDON_AFTER, maximum=MAX_DURATION, what="abandon-after"
    )


def format_duration(seconds: int) -> str:
    """Return ``7d``, ``12h`` or ``90m`` for a number of seconds: the largest exact unit."""
    # Days at most (14d, not 2w), as the console has always shown them; parse_duration reads
    # every result back.
    for unit in "dhm":
        size = DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def normalize_origin(origin: str) -> str:
    """Return ``scheme://host[:port]`` or raise ``TenantError``."""
    origin = origin.strip().rstrip("/")
    if not re.match(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$", origin):
        raise TenantError(f"origin '{origin}' must look like https://example.com[:port]")
    return origin.lower()


def parse_origins(text: str) -> tuple[list[str], list[str]]:
    """Return the normalized origins of a one-per-line text, and a message per bad line."""
    origins: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        # normalize_origin is the one rule of what an origin is; these two checks only say
        # more precisely why a common mistake breaks it.
        if "*" in line:
            problems.append(
                f"Line {number}: “{line}”: wildcards are not allowed; list each origin."
            )
            continue
        parts = urlsplit(line)
        if parts.scheme in ("http", "https") and parts.netloc and parts.path.strip("/"):
            problems.append(
                f"Line {number}: “{line}”: an origin has no path; "
                f"use {parts.scheme}://{parts.netloc}."
            )
            continue
        try:
            origin = normalize_origin(line)
        except TenantError:
            problems.append(
                f"Line {number}: “{line}” is not an origin; write it as "
                "https://example.com or http://localhost:3000."
            )
            continue
        if origin not in origins:
            origins.append(origin)
    if len(origins) > MAX_ORIGINS:
        problems.append(f"List at most {MAX_ORIGINS} origins ({len(origins)} given).")
    return origins, problems


def update_org_settings(
    org: Org, *, allowed_origins: list[str] | None = None, abandon_after: int | None = None
) -> Org:
    """Change the org's CORS origins and/or inactivity TTL."""
    settings = dict(org.settings)
    if allowed_origins is not None:
        settings["allowed_origins"] = sorted({normalize_origin(o) for o in allowed_origins if o})
    if abandon_after is not None:
        settings["abandon_after"] = check_duration(
            abandon_after, minimum=MIN_ABANDON_AFTER, maximum=MAX_DURATION, what="abandon-after"
        )
    org.settings = settings
    db.session.flush()
    return org


def create_api_key(org: Org, kind: KeyKind) -> tuple[ApiKey, str]:
    """Create a key; return it with the full secret, which is never stored."""
    secret = generate_secret(kind.prefix)
    key = ApiKey(
        org_id=org.id, kind=kind, prefix=display_prefix(secret), key_hash=hash_secret(secret)
    )
    db.session.add(key)
    db.session.flush()
    return key, secret


def revoke_api_key(org: Org, prefix: str) -> list[ApiKey]:
    """Revoke the org's live keys whose prefix starts with ``prefix``."""
    if len(prefix) < 6:
        raise TenantError("give at least 6 characters of the key prefix")
    keys = db.session.scalars(
        sa.select(ApiKey).where(
            ApiKey.org_id == org.id,
            ApiKey.revoked_at.is_(None),
            ApiKey.prefix.startswith(prefix[:11]),
        )
    ).all()
    keys = [key for key in keys if prefix.startswith(key.prefix) or key.prefix.startswith(prefix)]
    if not keys:
        raise TenantError(f"no live key with prefix '{prefix}' in '{org.slug}'")
    if len(keys) > 1:
        raise TenantError(f"prefix '{prefix}' matches {len(keys)} keys; give more characters")
    keys[0].revoked_at = utcnow()
    db.session.flush()
    return keys


def create_staff(email: str, password: str, org: Org, role: Role) -> StaffUser:
    """Create a staff user (or reuse one by email, setting its password), ``role`` in ``org``."""
    email = email.strip().lower()
    if "@" not in email:
        raise TenantError(f"'{email}' is not an email address")
    if len(password) < 8:
        raise TenantError("the password must have at least 8 characters")
    user = db.session.scalars(sa.select(StaffUser).where(StaffUser.email == email)).first()
    if user is None:
        user = StaffUser(email=email, password_hash=generate_password_hash(password))
        db.session.add(user)
        db.session.flush()
    elif not check_password_hash(user.password_hash, password):
        # A new password ends every session opened with the old one (someone who set up the
        # account before its owner, say, is signed out).
        user.password_hash = generate_password_hash(password)
        user.session_generation = (user.session_generation or 0) + 1
    membership = db.session.get(Membership, (org.id, user.id))
    if membership is None:
        db.session.add(Membership(org_id=org.id, user_id=user.id, role=role))
    else:
        membership.role = role
    db.session.flush()
    return user
