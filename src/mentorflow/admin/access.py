"""Who is using the console, in which org, with which role; and the views' common base."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, flash, redirect, request, session, url_for
from flask_admin import BaseView
from flask_login import current_user

from mentorflow.platform.db import fits_integer
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org, Role, StaffUser
from mentorflow.tenants.roles import at_least, staff_orgs

T = TypeVar("T")


@dataclass(frozen=True)
class Seat:
    """The signed-in staff member's place in the org they are looking at."""

    user: StaffUser
    org: Org
    role: Role

    def can(self, role: Role) -> bool:
        """Return whether this seat has at least ``role``."""
        return at_least(self.role, role)


def current_seat() -> Seat | None:
    """Return the signed-in staff member's seat in their current org (the session remembers)."""
    if not current_user.is_authenticated:
        return None
    orgs = staff_orgs(current_user.staff)
    if not orgs:
        return None
    chosen = session.get("org_id")
    for org, role in orgs:
        if org.id == chosen:
            return Seat(current_user.staff, org, role)
    org, role = orgs[0]
    session["org_id"] = org.id
    return Seat(current_user.staff, org, role)


def seat() -> Seat:
    """Return the current seat; callers run behind ConsoleView's access check."""
    found = current_seat()
    if found is None:
        abort(403)
    return found


def for_org(model: type[T], object_id: Any) -> T:
    """Return ``model`` ``object_id`` if it belongs to the current org; 404 for anyone else's."""
    if isinstance(object_id, int) and not fits_integer(object_id):
        abort(404)
    obj = db.session.get(model, object_id)
    if obj is None or obj.org_id != seat().org.id:  # type: ignore[attr-defined]
        abort(404)
    return obj  # type: ignore[return-value]


def requires(role: Role) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Let only seats with at least ``role`` run the view; others get 403 with a reason."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not seat().can(role):
                abort(403, description=f"This needs the {role} role or higher.")
            return view(*args, **kwargs)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return decorator


class ConsoleView(BaseView):
    """A console page: signed-in staff with a seat in an org only."""

    def is_accessible(self) -> bool:
        return current_seat() is not None

    def inaccessible_callback(self, name: str, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return redirect(url_for("console_auth.login", next=request.full_path))
        flash("Your account has no organization yet; ask an owner to invite you.", "warning")
        return redirect(url_for("console_auth.login"))

    def render(self, template: str, **kwargs: Any) -> str:
        kwargs.setdefault("seat", current_seat())
        return super().render(template, **kwargs)
