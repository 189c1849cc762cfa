"""The members tab of the settings: members, their roles and invitations; and the join page."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, session, url_for
from flask_admin import BaseView, expose
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash
from wtforms import EmailField, PasswordField, SelectChoice, SelectField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from mentorflow.admin.access import ConsoleView, requires, seat
from mentorflow.admin.auth import StaffLogin
from mentorflow.admin.settings.base import lock_org, no_store
from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.ratelimit import throttle
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.invitations import (
    accept_invitation,
    find_invitation,
    invite_staff,
    is_expired,
    pending_invitations,
    withdraw_invitation,
)
from mentorflow.tenants.models import Membership, Role, StaffUser
from mentorflow.tenants.roles import (
    ROLE_RANK,
    ROLES,
    NotAllowed,
    assignable_roles,
    remove_membership,
    set_member_role,
)

log = logging.getLogger(__name__)

ROLE_CHOICES = [SelectChoice(role.value) for role in ROLES]


class InvitationForm(FlaskForm):
    email = EmailField(
        "Email",
        filters=[lambda value: value.strip().lower() if value else value],
        validators=[DataRequired(), Email(), Length(max=320)],
    )
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.MENTOR.value)


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class NewStaffForm(FlaskForm):
    password = PasswordField(
        "Choose a password",
        validators=[DataRequired(), Length(min=8, max=200, message="Use at least 8 characters.")],
    )
    confirm = PasswordField(
        "Repeat the password",
        validators=[DataRequired(), EqualTo("password", message="The two passwords differ.")],
    )


class ExistingStaffForm(FlaskForm):
    password = PasswordField("Your password", validators=[DataRequired()])


class JoinForm(FlaskForm):
    """Only the CSRF token: the signed-in invitee confirms."""


def _member(user_id: int) -> Membership:
    """Return the current org's membership of ``user_id``; 404 for anyone else's."""
    member = db.session.get(Membership, (seat().org.id, user_id))
    if member is None:
        abort(404)
    return member


class MemberPages(ConsoleView):
    """The members tab of SettingsView: who is in the org, with which role, and who is invited."""

    def _members_page(
        self, invitation_form: InvitationForm | None = None, status: int = 200
    ) -> Any:
        org = seat().org
        members = db.session.execute(
            sa.select(Membership, StaffUser)
            .join(StaffUser, StaffUser.id == Membership.user_id)
            .where(Membership.org_id == org.id)
            .order_by(StaffUser.email)
        ).all()
        now = utcnow()
        invitations = sorted(
            (
                {
                    "hash": digest,
                    **invitation,
                    "expired": is_expired(invitation, now),
                    "expires": datetime.fromisoformat(invitation["expires_at"]),
                }
                for digest, invitation in pending_invitations(org).items()
            ),
            key=lambda invitation: invitation["email"],
        )
        page = self.render(
            "console/settings/members.html",
            tab="members",
            members=members,
            owners=sum(1 for member, _ in members if member.role is Role.OWNER),
            invitations=invitations,
            form=invitation_form or InvitationForm(formdata=None),
            roles=assignable_roles(seat().role),
        )
        return page, status

    @expose("/members")
    @requires(Role.ADMIN)
    def members(self) -> Any:
        return self._members_page()

    @expose("/members/invite", methods=["POST"])
    @requires(Role.ADMIN)
    def invite(self) -> Any:
        form = InvitationForm()
        if not form.validate_on_submit():
            return self._members_page(form, 422)
        org = lock_org()
        actor = seat()
        try:
            token = invite_staff(
                org,
                form.email.data,
                Role(form.role.data),
                invited_by=actor.user.email,
                actor_role=actor.role,
            )
        except NotAllowed as exc:
            abort(403, description=str(exc))
        except tenant_services.TenantError as exc:
            db.session.rollback()
            form.email.errors = [str(exc)]
            return self._members_page(form, 422)
        invitation = pending_invitations(org)[hash_secret(token)]
        db.session.commit()
        link = url_for("invite.accept", token=token, _external=True)
        log.info(
            "invitation to org %s for %s as %s by %s (no email is sent; the inviter "
            "shares this link): %s",
            org.slug,
            invitation["email"],
            invitation["role"],
            actor.user.email,
            link,
        )
        page = self.render(
            "console/settings/invitation_created.html",
            tab="members",
            invitation=invitation,
            link=link,
            expires=datetime.fromisoformat(invitation["expires_at"]),
        )
        return no_store(page, 201)

    @expose("/invitations/<digest>/cancel", methods=["POST"])
    @requires(Role.ADMIN)
    def cancel_invitation(self, digest: str) -> Any:
        org = lock_org()
        try:
            invitation = withdraw_invitation(org, digest)
        except KeyError:
            abort(404)
        db.session.commit()
        flash(
            f"Cancelled the invitation of {invitation['email']}; its link no longer works.", "info"
        )
        return redirect(self.get_url(".members"))

    @expose("/members/<int:user_id>/role", methods=["POST"])
    @requires(Role.ADMIN)
    def change_role(self, user_id: int) -> Any:
        form = RoleForm()
        if not form.validate_on_submit():
            flash(f"Pick one of the roles {', '.join(ROLE_RANK)}.", "danger")
            return redirect(self.get_url(".members"))
        lock_org()
        member = _member(user_id)
        try:
            set_member_role(member, Role(form.role.data), actor_role=seat().role)
        except NotAllowed as exc:
            abort(403, description=str(exc))
        except tenant_services.TenantError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return redirect(self.get_url(".members"))
        email = member.user.email
        db.session.commit()
        flash(f"{email} is now {form.role.data}.", "success")
        if not seat().can(Role.ADMIN):  # admins who stepped down can't see members any more
            return redirect(self.get_url(".index"))
        return redirect(self.get_url(".members"))

    @expose("/members/<int:user_id>/remove", methods=["POST"])
    @requires(Role.ADMIN)
    def remove_member(self, user_id: int) -> Any:
        lock_org()
        member = _member(user_id)
        email, org_name = member.user.email, member.org.name
        try:
            remove_membership(member, actor_role=seat().role)
        except NotAllowed as exc:
            abort(403, description=str(exc))
        except tenant_services.TenantError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return redirect(self.get_url(".members"))
        db.session.commit()
        flash(f"Removed {email} from {org_name}.", "success")
        if user_id == current_user.staff.id:
            return redirect(url_for("admin.index"))
        return redirect(self.get_url(".members"))


class InvitationView(BaseView):
    """The page an invitation link opens: no seat needed, the token is the credential."""

    def is_visible(self) -> bool:
        return False

    @expose("/")
    def index(self) -> Any:
        return _invalid_invitation("Open the whole link from your invitation.", 404)

    @expose("/<token>", methods=["GET", "POST"])
    def accept(self, token: str) -> Any:
        found = find_invitation(token)
        if found is None:
            return _invalid_invitation(
                "This invitation link does not work: it was used already, cancelled, or "
                "replaced by a newer one. Ask an admin of the organization for a new link.",
                404,
            )
        org, _, invitation = found
        if is_expired(invitation, utcnow()):
            return _invalid_invitation(
                f"This invitation to {org.name} expired; ask an admin for a new link.", 410
            )
        user = db.session.scalars(
            sa.select(StaffUser).where(StaffUser.email == invitation["email"])
        ).first()
        signed_in = (
            user is not None and current_user.is_authenticated and current_user.staff.id == user.id
        )
        form: FlaskForm
        if signed_in:
            form = JoinForm()
        elif user is not None:
            form = ExistingStaffForm()
        else:
            form = NewStaffForm()
        status = 200
        if form.is_submitted():
            # Throttled like sign-in: the existing-account form checks a password.
            throttle(
                "10 per minute",
                "console-join",
                "Too many attempts; wait a minute and try again.",
            )
            status = 422
            if form.validate():
                if isinstance(form, ExistingStaffForm) and not check_password_hash(
                    user.password_hash, form.password.data
                ):
                    form.password.errors = ["That is not the password of this account."]
                    status = 401
                else:
                    return self._join(token, form, invitation)
        return render_template(
            "console/settings/invite.html",
            org=org,
            invitation=invitation,
            form=form,
            existing=user is not None,
            signed_in=signed_in,
            expires=datetime.fromisoformat(invitation["expires_at"]),
        ), status

    def _join(self, token: str, form: FlaskForm, invitation: dict[str, Any]) -> Any:
        db.session.rollback()
        begin_write(db.session)
        # Locked and read again: two tabs submitting the same link make one member.
        found = find_invitation(token, lock=True)
        if (
            found is None
            or found[2]["email"] != invitation["email"]
            or is_expired(found[2], utcnow())
        ):
            db.session.rollback()
            return _invalid_invitation("This invitation link was used already.", 404)
        org, digest, invitation = found
        user = db.session.scalars(
            sa.select(StaffUser).where(StaffUser.email == invitation["email"])
        ).first()
        if (user is None) != isinstance(form, NewStaffForm):
            # The account was created or deleted since the form was shown: show it again.
            db.session.rollback()
            return redirect(url_for(".accept", token=token))
        if user is None:
            user = tenant_services.create_staff(
                invitation["email"], form.password.data, org, Role(invitation["role"])
            )
        member = accept_invitation(org, digest, user)
        role, org_id, org_name = member.role, org.id, org.name
        db.session.commit()
        log.info("invitation to org %s accepted by %s (%s)", org.slug, user.email, role)
        session.clear()
        login_user(StaffLogin(user))
        session["org_id"] = org_id
        flash(f"Welcome to {org_name}. Your role is {role}.", "success")
        return redirect(url_for("admin.index"))


def _invalid_invitation(message: str, status: int) -> Any:
    return render_template("console/settings/invite_invalid.html", message=message), status
