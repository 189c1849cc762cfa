"""The members tab of the settings: members, their roles and invitations; and the join page."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_admin import BaseView, expose
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from mentorflow.admin.access import ConsoleView, requires, seat
from mentorflow.admin.auth import PENDING_INVITATION, StaffLogin
from mentorflow.admin.settings.base import lock_org, no_store
from mentorflow.platform.crypto import hash_secret
from mentorflow.platform.db import begin_write, utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.ratelimit import throttle
from mentorflow.tenants import audit
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.accounts import create_invited_staff, find_staff
from mentorflow.tenants.invitations import (
    accept_invitation,
    find_invitation,
    fingerprint,
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
#: Longer than any token ``invite_staff`` makes; anything longer is not one.
MAX_TOKEN_LENGTH = 200


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


class JoinForm(FlaskForm):
    """Only the CSRF token: the invitee, signed in to the invited account, confirms."""


class OpenInvitationForm(FlaskForm):
    token = StringField(
        "Invitation code", validators=[DataRequired(), Length(max=MAX_TOKEN_LENGTH)]
    )


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
        digest = hash_secret(token)
        invitation = pending_invitations(org)[digest]
        audit.record(
            org.id,
            "invitation.created",
            f"invitation:{fingerprint(digest)}",
            after={"email": invitation["email"], "role": invitation["role"]},
        )
        db.session.commit()
        # The token after "#": browsers never send a fragment, so it sits in no access log.
        link = f"{url_for('invite.index', _external=True)}#{token}"
        log.info(
            "invitation %s to org %s for %s as %s by %s (no email is sent; the inviter "
            "shares the link, which is never logged)",
            fingerprint(digest),
            org.slug,
            invitation["email"],
            invitation["role"],
            actor.user.email,
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
        audit.record(
            org.id,
            "invitation.cancelled",
            f"invitation:{fingerprint(digest)}",
            before={"email": invitation["email"], "role": invitation["role"]},
        )
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
        before_role = str(member.role)
        try:
            set_member_role(member, Role(form.role.data), actor_role=seat().role)
        except NotAllowed as exc:
            abort(403, description=str(exc))
        except tenant_services.TenantError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return redirect(self.get_url(".members"))
        email = member.user.email
        audit.record(
            member.org_id,
            "member.role_changed",
            f"member:{email}",
            before={"role": before_role},
            after={"role": str(member.role)},
        )
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
        seat_org_id, before_role = member.org_id, str(member.role)
        try:
            remove_membership(member, actor_role=seat().role)
        except NotAllowed as exc:
            abort(403, description=str(exc))
        except tenant_services.TenantError as exc:
            db.session.rollback()
            flash(str(exc), "danger")
            return redirect(self.get_url(".members"))
        audit.record(seat_org_id, "member.removed", f"member:{email}", before={"role": before_role})
        db.session.commit()
        flash(f"Removed {email} from {org_name}.", "success")
        if user_id == current_user.staff.id:
            return redirect(url_for("admin.index"))
        return redirect(self.get_url(".members"))


class InvitationView(BaseView):
    """The page an invitation link opens: no seat needed, the token is the credential.

    The link is ``/admin/invite/#<token>``; the page's script posts the token (a visitor
    without scripts pastes it), and every later form carries it in its body. An invitation
    creates an account only for an email that has none; an existing account accepts only
    while signed in as itself, through the sign-in page and its throttles.
    """

    def is_visible(self) -> bool:
        return False

    @expose("/", methods=["GET", "POST"])
    def index(self) -> Any:
        if request.method == "POST":
            token = (request.form.get("token") or "").strip()
        else:
            token = session.get(PENDING_INVITATION, "")  # back from signing in
        if not token:
            form = OpenInvitationForm(formdata=None)
            return render_template("console/settings/invite_open.html", form=form)
        return self._invitation_page(token[:MAX_TOKEN_LENGTH], request.method == "POST")

    def _invitation_page(self, token: str, posted: bool) -> Any:
        found = find_invitation(token)
        if found is None:
            session.pop(PENDING_INVITATION, None)
            return _invalid_invitation(
                "This invitation link does not work: it was used already, cancelled, or "
                "replaced by a newer one. Ask an admin of the organization for a new link.",
                404,
            )
        org, _, invitation = found
        if is_expired(invitation, utcnow()):
            session.pop(PENDING_INVITATION, None)
            return _invalid_invitation(
                f"This invitation to {org.name} expired; ask an admin for a new link.", 410
            )
        user = find_staff(invitation["email"])
        signed_in_as = current_user.staff if current_user.is_authenticated else None
        form: FlaskForm = NewStaffForm() if user is None else JoinForm()
        status = 200
        must_sign_in = user is not None and (signed_in_as is None or signed_in_as.id != user.id)
        if must_sign_in:
            # Remembered across signing in, so the invitee comes back to this page.
            session[PENDING_INVITATION] = token
            if posted and request.form.get("join"):
                status = 403
        elif posted and request.form.get("join"):
            throttle(
                "10 per minute",
                "console-join",
                "Too many attempts; wait a minute and try again.",
            )
            status = 422
            if form.validate():
                return self._join(token, form, invitation)
        return render_template(
            "console/settings/invite.html",
            org=org,
            invitation=invitation,
            form=form,
            token=token,
            existing=user is not None,
            must_sign_in=must_sign_in,
            signed_in_as=signed_in_as,
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
        user = find_staff(invitation["email"])
        try:
            if isinstance(form, NewStaffForm):
                user = create_invited_staff(invitation["email"], form.password.data)
            elif user is None or not current_user.is_authenticated:
                raise tenant_services.TenantError("the account changed since the page was shown")
            elif current_user.staff.id != user.id:
                raise tenant_services.TenantError("signed in as another account")
            member = accept_invitation(org, digest, user)
            role, org_id, org_name = member.role, org.id, org.name
            audit.record(
                org_id,
                "member.joined",
                f"member:{user.email}",
                after={"role": str(role), "invitation": fingerprint(digest)},
                actor=user.email,
            )
            db.session.commit()
        except (tenant_services.TenantError, sa.exc.IntegrityError):
            # The account was created (or deleted) since the form was shown: show it again.
            db.session.rollback()
            session[PENDING_INVITATION] = token
            return redirect(url_for(".index"))
        log.info(
            "invitation %s to org %s accepted by %s (%s)",
            fingerprint(digest),
            org.slug,
            user.email,
            role,
        )
        session.clear()
        login_user(StaffLogin(user))
        session["org_id"] = org_id
        flash(f"Welcome to {org_name}. Your role is {role}.", "success")
        return redirect(url_for("admin.index"))


def _invalid_invitation(message: str, status: int) -> Any:
    return render_template("console/settings/invite_invalid.html", message=message), status
