"""Invitations of staff to an org: one-time links, of which only the tokens' hashes are kept."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Membership, Org, Role, StaffUser
from mentorflow.tenants.roles import NotAllowed, at_least
from mentorflow.tenants.services import TenantError

INVITATION_TTL = timedelta(days=7)
#: Expired invitations stay listed (and their links answer "expired") this long, then go.
EXPIRED_INVITATION_KEPT = timedelta(days=30)


# Stored in ``Org.settings["invitations"]`` as ``{hash_secret(token): {email, role, invited_by,
# expires_at}}``: the raw token is only ever in the one-time link, which is shown to the inviter
# once (no mail is sent), so a leaked database opens no invitation. Logs name an invitation by
# its fingerprint only. The token rides after the link's "#", which browsers never send, and
# is posted in a form body: it sits in no access log either.

#: Characters of an invitation's hash that name it in logs and on the members page.
FINGERPRINT_LENGTH = 8


def fingerprint(digest: str) -> str:
    """Return the short name of the invitation with hash ``digest``, safe to log."""
    return digest[:FINGERPRINT_LENGTH]


def pending_invitations(org: Org) -> dict[str, dict[str, Any]]:
    """Return the org's invitations by token hash (expired ones included)."""
    return dict(org.settings.get("invitations") or {})


def is_expired(invitation: Mapping[str, Any], now: datetime) -> bool:
    """Return whether an invitation's link no longer works."""
    return datetime.fromisoformat(invitation["expires_at"]) <= now


def _store_invitations(org: Org, invitations: dict[str, dict[str, Any]]) -> None:
    # A new dict, so that the JSON column sees the change.
    org.settings = {**org.settings, "invitations": invitations}
    db.session.flush()


def invite_staff(org: Org, email: str, role: Role, *, invited_by: str, actor_role: Role) -> str:
    """Invite ``email`` to ``org`` as ``role``; return the one-time token (only its hash is kept).

    A newer invitation for the same email replaces the older one, whose link stops working.
    """
    email = email.strip().lower()
    if role is Role.OWNER and not at_least(actor_role, Role.OWNER):
        raise NotAllowed("Only an owner can invite an owner.")
    member = db.session.scalars(
        sa.select(Membership)
        .join(StaffUser)
        .where(Membership.org_id == org.id, StaffUser.email == email)
    ).first()
    if member is not None:
        raise TenantError(f"{email} is already a member of {org.name} ({member.role}).")
    now = utcnow()
    kept = {
        digest: invitation
        for digest, invitation in pending_invitations(org).items()
        if invitation["email"] != email
        and datetime.fromisoformat(invitation["expires_at"]) > now - EXPIRED_INVITATION_KEPT
    }
    # The org id leads the token, so the link finds its org without scanning every org.
    token = f"{org.id}.{secrets.token_urlsafe(32)}"
    kept[hash_secret(token)] = {
        "email": email,
        "role": role.value,
        "invited_by": invited_by,
        "expires_at": (now + INVITATION_TTL).isoformat(),
    }
    _store_invitations(org, kept)
    return token


def withdraw_invitation(org: Org, digest: str) -> dict[str, Any]:
    """Forget the invitation ``digest``; its link stops working. Raise KeyError if unknown."""
    invitations = pending_invitations(org)
    invitation = invitations.pop(digest)
    _store_invitations(org, invitations)
    return invitation


def find_invitation(token: str, *, lock: bool = False) -> tuple[Org, str, dict[str, Any]] | None:
    """Return (org, hash, invitation) for a link's token, or None if it is unknown or used."""
    org_id, _, rest = token.partition(".")
    if not org_id.isdigit() or not rest:
        return None
    query = sa.select(Org).where(Org.id == int(org_id))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    org = db.session.scalars(query).first()
    digest = hash_secret(token)
    invitation = None if org is None else pending_invitations(org).get(digest)
    return None if invitation is None else (org, digest, invitation)


def accept_invitation(org: Org, digest: str, user: StaffUser) -> Membership:
    """Make ``user`` a member with the invitation's role and use the invitation up.

    Someone who is a member already keeps their role.
    """
    invitations = pending_invitations(org)
    invitation = invitations.pop(digest)
    member = db.session.get(Membership, (org.id, user.id))
    if member is None:
        member = Membership(org_id=org.id, user_id=user.id, role=Role(invitation["role"]))
        db.session.add(member)
    _store_invitations(org, invitations)
    return member
