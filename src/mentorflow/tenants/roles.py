"""Staff roles in an org: their ranks, who may give which, and the last-owner rule."""

from __future__ import annotations

import sqlalchemy as sa

from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Membership, Org, Role, StaffUser
from mentorflow.tenants.services import TenantError

#: Each role can do what the roles before it can, and more.
ROLE_RANK = {Role.VIEWER: 0, Role.MENTOR: 1, Role.ADMIN: 2, Role.OWNER: 3}
#: The roles from the least to the most allowed.
ROLES = sorted(Role, key=ROLE_RANK.__getitem__)


class NotAllowed(Exception):
    """The actor's role does not allow this change."""


def at_least(role: Role, minimum: Role) -> bool:
    """Return whether ``role`` can do what ``minimum`` can."""
    return ROLE_RANK[role] >= ROLE_RANK[minimum]


def staff_orgs(user: StaffUser) -> list[tuple[Org, Role]]:
    """Return the orgs a staff member may open, with their role (superusers: all, as owner)."""
    if user.is_superuser:
        orgs = db.session.scalars(sa.select(Org).order_by(Org.name)).all()
        return [(org, Role.OWNER) for org in orgs]
    rows = db.session.execute(
        sa.select(Org, Membership.role)
        .join(Membership, Membership.org_id == Org.id)
        .where(Membership.user_id == user.id)
        .order_by(Org.name)
    ).all()
    return [(org, role) for org, role in rows]


def assignable_roles(actor_role: Role) -> list[Role]:
    """Return the roles someone with ``actor_role`` may give: owners any, admins any but owner."""
    return [role for role in ROLES if role is not Role.OWNER or at_least(actor_role, Role.OWNER)]


def _owner_count(org_id: int) -> int:
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(Membership.org_id == org_id, Membership.role == Role.OWNER)
        )
        or 0
    )


def _check_owner_rule(actor_role: Role, member: Membership, new_role: Role | None) -> None:
    if Role.OWNER in (member.role, new_role) and not at_least(actor_role, Role.OWNER):
        raise NotAllowed("Only an owner can make someone an owner or change an owner's role.")
    if (
        member.role is Role.OWNER
        and new_role is not Role.OWNER
        and _owner_count(member.org_id) <= 1
    ):
        raise TenantError(
            f"{member.user.email} is the last owner of this organization; "
            "make someone else an owner first."
        )


def set_member_role(member: Membership, role: Role, *, actor_role: Role) -> Membership:
    """Give ``member`` ``role``, keeping at least one owner."""
    _check_owner_rule(actor_role, member, role)
    member.role = role
    db.session.flush()
    return member


def remove_membership(member: Membership, *, actor_role: Role) -> None:
    """Take ``member`` out of their org, keeping at least one owner."""
    _check_owner_rule(actor_role, member, None)
    db.session.delete(member)
    db.session.flush()
