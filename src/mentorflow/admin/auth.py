"""Staff sign-in for the console: Flask-Login sessions, Flask-WTF forms, throttled attempts.

A session remembers the account and its session generation; signing out or changing the
password bumps the generation, which ends every session of the account (on every device).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.platform.ratelimit import LimiterUnavailable, throttle, throttle_sign_in
from mentorflow.tenants.accounts import (
    MIN_PASSWORD_LENGTH,
    authenticate_staff,
    change_password,
    end_sessions,
)
from mentorflow.tenants.models import StaffUser
from mentorflow.tenants.roles import staff_orgs
from mentorflow.tenants.services import TenantError

bp = Blueprint(
    "console_auth",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static/console",
    static_url_path="/_static",
)
#: Session key of an invitation the visitor opened and has to sign in to accept.
PENDING_INVITATION = "pending_invitation"
login_manager = LoginManager()
login_manager.login_view = "console_auth.login"
login_manager.login_message = "Please sign in to use the console."
login_manager.session_protection = "strong"


class StaffLogin(UserMixin):
    """The Flask-Login user: a staff member, looked up on every request."""

    def __init__(self, staff: StaffUser) -> None:
        self.staff = staff
        # What the session stores: the account and the generation it was signed in at.
        self.id = f"{staff.id}.{staff.session_generation or 0}"

    @property
    def email(self) -> str:
        return self.staff.email


@login_manager.user_loader
def load_staff(session_id: str) -> StaffLogin | None:
    """Return the session's staff member, or None if the session ended (sign-out elsewhere)."""
    user_id, _, generation = session_id.partition(".")
    if not (user_id.isdigit() and generation.isdigit()):
        return None  # also sessions from before generations existed: sign in again
    staff = db.session.get(StaffUser, int(user_id))
    if staff is None or (staff.session_generation or 0) != int(generation):
        return None
    return StaffLogin(staff)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email()])
    password = PasswordField("Password", validators=[DataRequired()])


class PasswordChangeForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField(
        "New password",
        validators=[
            DataRequired(),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=200,
                message=f"Use at least {MIN_PASSWORD_LENGTH} characters.",
            ),
        ],
    )
    confirm = PasswordField(
        "Repeat the new password",
        validators=[DataRequired(), EqualTo("password", message="The two passwords differ.")],
    )


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never bounce a fresh session to another host.
    if target and not urlsplit(target).netloc and target.startswith("/admin"):
        return target
    return url_for("admin.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign a staff member in."""
    if request.method == "POST":
        try:
            throttle_sign_in(request.form.get("email", ""))
        except LimiterUnavailable:
            # Fail closed: no password is checked while attempts can't be counted.
            flash("Sign-in is unavailable right now; try again in a few minutes.", "danger")
            return render_template("console/login.html", form=LoginForm()), 503
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        staff = authenticate_staff(form.email.data, form.password.data)
        if staff is not None:
            _start_session(staff)
            return redirect(_safe_next(request.args.get("next")))
        flash("That email and password do not match a staff account.", "danger")
        status = 401
    return render_template("console/login.html", form=form), status


def _start_session(staff: StaffUser) -> None:
    # A fresh session (no fixation), keeping only an invitation the visitor is signing in for.
    pending = session.get(PENDING_INVITATION)
    session.clear()
    login_user(StaffLogin(staff))
    if pending:
        session[PENDING_INVITATION] = pending


@bp.post("/logout")
@login_required
def logout() -> Any:
    """Sign out, on every device: the account's other sessions end too."""
    user_id = current_user.staff.id
    db.session.rollback()
    begin_write(db.session)
    end_sessions(db.session.get(StaffUser, user_id))
    db.session.commit()
    pending = session.get(PENDING_INVITATION)
    logout_user()
    session.clear()
    if pending:
        session[PENDING_INVITATION] = pending
    flash("Signed out (on every device).", "info")
    target = request.args.get("next")
    return redirect(url_for("console_auth.login", next=_safe_next(target) if target else None))


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account() -> Any:
    """Change the signed-in staff member's password; their other sessions end."""
    form = PasswordChangeForm()
    status = 200
    if form.is_submitted():
        throttle(
            "10 per minute",
            "console-password",
            "Too many attempts; wait a minute and try again.",
        )
        status = 422
    if form.validate_on_submit():
        user_id, org_id = current_user.staff.id, session.get("org_id")
        db.session.rollback()
        begin_write(db.session)
        staff = db.session.get(StaffUser, user_id)
        try:
            change_password(staff, form.current.data, form.password.data)
        except TenantError as exc:
            db.session.rollback()
            form.current.errors = [str(exc)]
            return render_template("console/account.html", form=form), 401
        db.session.commit()
        _start_session(staff)  # this session goes on under the new generation
        if org_id is not None:
            session["org_id"] = org_id
        flash("Password changed. Every other session of your account is signed out.", "success")
        return redirect(url_for("admin.index"))
    return render_template("console/account.html", form=form), status


@bp.post("/org/<slug>")
@login_required
def switch_org(slug: str) -> Any:
    """Open another org the staff member belongs to."""
    for org, _ in staff_orgs(current_user.staff):
        if org.slug == slug:
            session["org_id"] = org.id
            return redirect(url_for("admin.index"))
    return "Not Found", 404
