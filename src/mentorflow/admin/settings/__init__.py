"""Console pages for an org's settings: members, invitations, API keys, CORS, integrations, TTL.

Everyone with a seat sees a summary without secrets; admins change things, and only owners
make or unmake owners.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    session,
    url_for,
)
from flask_admin import BaseView, expose
from flask_login import current_user, login_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash
from wtforms import (
    BooleanField,
    EmailField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, EqualTo, Length, Optional, ValidationError

from mentorflow.admin.access import ConsoleView, for_org, requires, seat
from mentorflow.admin.auth import StaffLogin
from mentorflow.delivery.integrations import (
    integration_status,
    send_test_event,
    set_integration,
)
from mentorflow.delivery.sinks import DeliveryFailed, SinkType, sink_types
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
from mentorflow.tenants.models import ApiKey, KeyKind, Membership, Org, Role, StaffUser
from mentorflow.tenants.roles import (
    ROLE_RANK,
    ROLES,
    NotAllowed,
    assignable_roles,
    remove_membership,
    set_member_role,
)
from mentorflow.tenants.services import format_duration, parse_origins

log = logging.getLogger(__name__)

ROLE_CHOICES = [SelectChoice(role.value) for role in ROLES]


# Forms. Templates put the CSRF token in by hand (``csrf_token()``), so that several forms on
# one page don't repeat the same element id; FlaskForm checks it on submit.


class InvitationForm(FlaskForm):
    email = EmailField(
        "Email",
        filters=[lambda value: value.strip().lower() if value else value],
        validators=[DataRequired(), Email(), Length(max=320)],
    )
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.MENTOR.value)


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class ApiKeyForm(FlaskForm):
    kind = SelectField(
        "Kind",
        choices=[
            SelectChoice(KeyKind.PUBLISHABLE.value, "Publishable (pk_…)"),
            SelectChoice(KeyKind.SECRET.value, "Secret (sk_…)"),
        ],
    )


class OriginsForm(FlaskForm):
    allowed_origins = TextAreaField("Allowed origins")

    def validate(self, extra_validators: Any = None) -> bool:
        if not super().validate(extra_validators):
            return False
        self.origins, problems = parse_origins(self.allowed_origins.data or "")
        if problems:
            self.allowed_origins.errors = problems
            return False
        return True


class AbandonmentForm(FlaskForm):
    abandon_after = StringField(
        "Abandon after", validators=[DataRequired(message="Give a duration such as 7d.")]
    )

    def validate_abandon_after(self, field: StringField) -> None:
        try:
            self.seconds = tenant_services.parse_duration(field.data)
        except tenant_services.TenantError as exc:
            raise ValidationError(f"The {exc}.") from exc
        if self.seconds < 60:
            raise ValidationError("Use at least a minute (1m).")


class IntegrationForm(FlaskForm):
    api_key = PasswordField("API key", validators=[Optional(), Length(max=500)])
    url = StringField("URL", validators=[Optional(), Length(max=500)])
    send_answers = BooleanField("Send answers to PostHog")

    def validate_url(self, field: StringField) -> None:
        parts = urlsplit(field.data.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("Give an http(s) URL such as https://eu.i.posthog.com.")


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


# Views.


def _lock_org() -> Org:
    """Return the current org, locked for this transaction, so concurrent edits don't clash."""
    org_id = seat().org.id
    begin_write(db.session)
    return db.session.scalars(
        sa.select(Org)
        .where(Org.id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _member(user_id: int) -> Membership:
    """Return the current org's membership of ``user_id``; 404 for anyone else's."""
    member = db.session.get(Membership, (seat().org.id, user_id))
    if member is None:
        abort(404)
    return member


def _org_cache_note() -> str:
    seconds = int(current_app.config.get("ORG_CACHE_SECONDS") or 0)
    return f" API servers apply it within {seconds} seconds." if seconds else ""


def _no_store(response: Any, status: int = 200) -> Response:
    response = make_response(response, status)
    response.headers["Cache-Control"] = "no-store"
    return response


class SettingsView(ConsoleView):
    """Settings of the current org."""

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        roles = dict(
            db.session.execute(
                sa.select(Membership.role, sa.func.count())
                .where(Membership.org_id == org.id)
                .group_by(Membership.role)
            ).all()
        )
        keys = dict(
            db.session.execute(
                sa.select(ApiKey.kind, sa.func.count())
                .where(ApiKey.org_id == org.id, ApiKey.revoked_at.is_(None))
                .group_by(ApiKey.kind)
            ).all()
        )
        return self.render(
            "console/settings/index.html",
            tab="overview",
            roles={str(role): count for role, count in roles.items()},
            keys={str(kind): count for kind, count in keys.items()},
            **self._general_context(org),
        )

    def _general_context(self, org: Org) -> dict[str, Any]:
        default_ttl = int(current_app.config["ABANDON_AFTER"])
        return {
            "origins": org.allowed_origins,
            "ttl": format_duration(org.abandon_after(default_ttl)),
            "ttl_is_default": "abandon_after" not in org.settings,
            "default_ttl": format_duration(default_ttl),
            "integrations": integration_status(org.settings, current_app.config),
        }

    # Members and invitations.

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
        org = _lock_org()
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
        return _no_store(page, 201)

    @expose("/invitations/<digest>/cancel", methods=["POST"])
    @requires(Role.ADMIN)
    def cancel_invitation(self, digest: str) -> Any:
        org = _lock_org()
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
        _lock_org()
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
        _lock_org()
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

    # API keys.

    def _keys_page(self, form: ApiKeyForm | None = None, status: int = 200) -> Any:
        keys = db.session.scalars(
            sa.select(ApiKey)
            .where(ApiKey.org_id == seat().org.id)
            .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())
        ).all()
        return self.render(
            "console/settings/keys.html",
            tab="keys",
            keys=keys,
            form=form or ApiKeyForm(formdata=None),
        ), status

    @expose("/keys")
    @requires(Role.ADMIN)
    def keys(self) -> Any:
        return self._keys_page()

    @expose("/keys/new", methods=["POST"])
    @requires(Role.ADMIN)
    def create_key(self) -> Any:
        form = ApiKeyForm()
        if not form.validate_on_submit():
            return self._keys_page(form, 422)
        org = _lock_org()
        key, secret = tenant_services.create_api_key(org, KeyKind(form.kind.data))
        db.session.commit()
        log.info(
            "API key %s… (%s) created in org %s by %s",
            key.prefix,
            key.kind,
            org.slug,
            seat().user.email,
        )
        # Shown on this response only: not stored, not flashed into the session cookie.
        page = self.render("console/settings/key_created.html", tab="keys", key=key, secret=secret)
        return _no_store(page, 201)

    @expose("/keys/<int:key_id>/revoke", methods=["POST"])
    @requires(Role.ADMIN)
    def revoke_key(self, key_id: int) -> Any:
        org = _lock_org()
        key = for_org(ApiKey, key_id)
        if key.revoked_at is not None:
            flash(f"{key.prefix}… was revoked already.", "info")
            return redirect(self.get_url(".keys"))
        try:
            tenant_services.revoke_api_key(org, key.prefix)
        except tenant_services.TenantError as exc:
            db.session.rollback()
            flash(f"Not revoked: {exc}.", "danger")
            return redirect(self.get_url(".keys"))
        db.session.commit()
        log.info("API key %s… revoked in org %s by %s", key.prefix, org.slug, seat().user.email)
        flash(f"Revoked {key.prefix}…: requests with it now get 401.", "success")
        return redirect(self.get_url(".keys"))

    # CORS origins and the abandonment TTL.

    def _general_page(
        self,
        origins_form: OriginsForm | None = None,
        abandonment_form: AbandonmentForm | None = None,
        status: int = 200,
    ) -> Any:
        org = seat().org
        context = self._general_context(org)
        if origins_form is None:
            origins_form = OriginsForm(formdata=None, allowed_origins="\n".join(context["origins"]))
        if abandonment_form is None:
            abandonment_form = AbandonmentForm(
                formdata=None, abandon_after="" if context["ttl_is_default"] else context["ttl"]
            )
        return self.render(
            "console/settings/general.html",
            tab="general",
            origins_form=origins_form,
            abandonment_form=abandonment_form,
            **context,
        ), status

    @expose("/general")
    @requires(Role.ADMIN)
    def general(self) -> Any:
        return self._general_page()

    @expose("/general/origins", methods=["POST"])
    @requires(Role.ADMIN)
    def save_origins(self) -> Any:
        form = OriginsForm()
        if not form.validate_on_submit():
            return self._general_page(origins_form=form, status=422)
        org = _lock_org()
        tenant_services.update_org_settings(org, allowed_origins=form.origins)
        db.session.commit()
        count = len(org.allowed_origins)
        flash(
            (
                "No browser origin may call the API now."
                if not count
                else f"Saved {count} allowed origin{'s' if count != 1 else ''}."
            )
            + _org_cache_note(),
            "success",
        )
        return redirect(self.get_url(".general"))

    @expose("/general/abandonment", methods=["POST"])
    @requires(Role.ADMIN)
    def save_abandonment(self) -> Any:
        form = AbandonmentForm()
        if not form.validate_on_submit():
            return self._general_page(abandonment_form=form, status=422)
        org = _lock_org()
        tenant_services.update_org_settings(org, abandon_after=form.seconds)
        db.session.commit()
        flash(
            f"Sessions idle for {format_duration(form.seconds)} are now marked abandoned.",
            "success",
        )
        return redirect(self.get_url(".general"))

    # Integrations.

    def _integrations_page(
        self, forms: dict[str, IntegrationForm] | None = None, status: int = 200
    ) -> Any:
        org = seat().org
        forms = dict(forms or {})
        rows = integration_status(org.settings, current_app.config)
        for row in rows:
            sink = row["integration"].name
            if sink not in forms:
                forms[sink] = IntegrationForm(
                    formdata=None, url=row["own_url"] or "", send_answers=row["send_answers"]
                )
        return self.render(
            "console/settings/integrations.html", tab="integrations", rows=rows, forms=forms
        ), status

    @staticmethod
    def _integration(sink: str) -> SinkType:
        if sink not in sink_types:
            abort(404)
        return sink_types[sink]

    @expose("/integrations")
    @requires(Role.ADMIN)
    def integrations(self) -> Any:
        return self._integrations_page()

    @expose("/integrations/<sink>", methods=["POST"])
    @requires(Role.ADMIN)
    def save_integration(self, sink: str) -> Any:
        integration = self._integration(sink)
        form = IntegrationForm()
        if not form.validate_on_submit():
            return self._integrations_page({sink: form}, 422)
        org = _lock_org()
        own = (org.settings.get("integrations") or {}).get(sink) or {}
        api_key = (form.api_key.data or "").strip() or None
        url = (form.url.data or "").strip() or None
        if url and not api_key and not own.get("api_key_encrypted"):
            db.session.rollback()
            form.url.errors = [
                f"Set this organization's own {integration.label} API key too: "
                "the platform's key is never sent to another host."
            ]
            return self._integrations_page({sink: form}, 422)
        set_integration(
            org,
            sink,
            current_app.config,
            api_key=api_key,
            url=url,
            send_answers=bool(form.send_answers.data) if sink == "posthog" else None,
        )
        db.session.commit()
        log.info(
            "integration %s of org %s changed by %s (key %s)",
            sink,
            org.slug,
            seat().user.email,
            "replaced" if api_key else "unchanged",
        )
        flash(
            f"Saved the {integration.label} settings."
            + (" The new API key is stored encrypted and is never shown again." if api_key else ""),
            "success",
        )
        return redirect(self.get_url(".integrations"))

    @expose("/integrations/<sink>/clear", methods=["POST"])
    @requires(Role.ADMIN)
    def clear_integration(self, sink: str) -> Any:
        integration = self._integration(sink)
        org = _lock_org()
        set_integration(org, sink, current_app.config, clear=True)
        db.session.commit()
        log.info("integration %s of org %s cleared by %s", sink, org.slug, seat().user.email)
        flash(
            f"Cleared this organization's {integration.label} settings; the platform's apply.",
            "info",
        )
        return redirect(self.get_url(".integrations"))

    @expose("/integrations/<sink>/test", methods=["POST"])
    @requires(Role.ADMIN)
    def test_integration(self, sink: str) -> Any:
        integration = self._integration(sink)
        actor = seat()
        org_slug, org_settings, by = actor.org.slug, dict(actor.org.settings), actor.user.email
        # The sink waits on the network: end the request's transaction first, so that nothing
        # of it is held meanwhile.
        db.session.rollback()
        try:
            outcome = send_test_event(org_slug, org_settings, sink, by, current_app.config)
        except DeliveryFailed as exc:
            log.warning("test event to %s for org %s failed: %s", sink, org_slug, exc.message)
            flash(f"The {integration.label} test event was not delivered: {exc.message}", "danger")
        else:
            log.info("test event to %s for org %s: %s", sink, org_slug, outcome)
            flash(outcome, "success")
        return redirect(self.get_url(".integrations"))


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


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [
        SettingsView(name="Settings", endpoint="settings", url="/admin/settings"),
        InvitationView(name="Invitation", endpoint="invite", url="/admin/invite"),
    ]
