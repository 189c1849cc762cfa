"""Staff accounts: checking passwords, changing them, and ending every session of an account."""

from __future__ import annotations

import functools
import secrets

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from mentorflow.platform.extensions import db
from mentorflow.tenants.models import StaffUser
from mentorflow.tenants.services import TenantError

MIN_PASSWORD_LENGTH = 8


@functools.cache
def _dummy_password_hash() -> str:
    # A hash of a password nobody knows, made with the same method and cost as real ones, so
    # that checking an unknown email takes as long as checking a known one.
    return generate_password_hash(secrets.token_urlsafe(32))


def find_staff(email: str) -> StaffUser | None:
    """Return the staff account of ``email`` (any case, surrounding spaces ignored), or None."""
    return db.session.scalars(
        sa.select(StaffUser).where(StaffUser.email == email.strip().lower())
    ).first()


def authenticate_staff(email: str, password: str) -> StaffUser | None:
    """Return the account of ``email`` if ``password`` is its password, else None.

    One password hash is checked either way, against a dummy hash for an unknown email, so the
    answer takes as long whether or not the email has an account.
    """
    user = find_staff(email)
    stored = user.password_hash if user is not None else _dummy_password_hash()
    matches = check_password_hash(stored, password)
    return user if user is not None and matches else None


def create_invited_staff(email: str, password: str) -> StaffUser:
    """Create the account of an invitee who opened their link; never touch an existing one."""
    email = email.strip().lower()
    if find_staff(email) is not None:
        raise TenantError(f"{email} has an account already; sign in to it to accept.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise TenantError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = StaffUser(email=email, password_hash=generate_password_hash(password))
    db.session.add(user)
    db.session.flush()
    return user


def end_sessions(user: StaffUser) -> None:
    """End every console session of ``user`` (each checks the generation on every request)."""
    user.session_generation = (user.session_generation or 0) + 1
    db.session.flush()


def set_password(user: StaffUser, password: str) -> None:
    """Give ``user`` a new password and end every session opened with the old one."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise TenantError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = generate_password_hash(password)
    end_sessions(user)


def change_password(user: StaffUser, current: str, new: str) -> None:
    """Replace ``user``'s password after checking the current one; end their other sessions."""
    if not check_password_hash(user.password_hash, current):
        raise TenantError("That is not your current password.")
    set_password(user, new)
