"""Staff sign-in for the console: Flask-Login sessions, Flask-WTF forms, throttled attempts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Email

from mentorflow.platform.extensions import db
from mentorflow.platform.ratelimit import LimiterUnavailable, throttle_sign_in
from mentorflow.tenants.models import StaffUser
from mentorflow.tenants.roles import staff_orgs

bp = Blueprint("console_auth", __name__, url_prefix="/admin", template_folder="templates")
login_manager = LoginManager()
login_manager.login_view = "console_auth.login"
login_manager.login_message = "Please sign in to use the console."
login_manager.session_protection = "strong"


class StaffLogin(UserMixin):
    """The Flask-Login user: a staff member, looked up on every request."""

    def __init__(self, staff: StaffUser) -> None:
        self.staff = staff
        self.id = str(staff.id)

    @property
    def email(self) -> str:
        return self.staff.email


@login_manager.user_loader
def load_staff(user_id: str) -> StaffLogin | None:
    staff = db.session.get(StaffUser, int(user_id)) if user_id.isdigit() else None
    return StaffLogin(staff) if staff else None


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email()])
    password = PasswordField("Password", validators=[DataRequired()])


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
        staff = db.session.scalars(
            sa.select(StaffUser).where(StaffUser.email == form.email.data.strip().lower())
        ).first()
        if staff and check_password_hash(staff.password_hash, form.password.data):
            session.clear()
            login_user(StaffLogin(staff))
            return redirect(_safe_next(request.args.get("next")))
        flash("That email and password do not match a staff account.", "danger")
        status = 401
    return render_template("console/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout() -> Any:
    """Sign out."""
    logout_user()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("console_auth.login"))


@bp.post("/org/<slug>")
@login_required
def switch_org(slug: str) -> Any:
    """Open another org the staff member belongs to."""
    from flask_login import current_user

    for org, _ in staff_orgs(current_user.staff):
        if org.slug == slug:
            session["org_id"] = org.id
            return redirect(url_for("admin.index"))
    return "Not Found", 404
