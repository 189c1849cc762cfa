"""The general tab of the settings: the org's CORS origins and abandonment TTL."""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, redirect, request
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import DataRequired, ValidationError

from mentorflow.admin.access import ConsoleView, requires, seat
from mentorflow.admin.settings.base import lock_org
from mentorflow.delivery.integrations import integration_status
from mentorflow.flows import erasure
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.analytics import analytics_answers, set_analytics_answers
from mentorflow.tenants.models import Org, Role
from mentorflow.tenants.services import format_duration, parse_origins


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
            self.seconds = tenant_services.parse_abandon_after(field.data)
        except tenant_services.TenantError as exc:
            raise ValidationError(f"The {exc}.") from exc


class AnalyticsForm(FlaskForm):
    analytics_answers = BooleanField("Send answers and message content to PostHog")


def general_context(org: Org) -> dict[str, Any]:
    """Return what the overview and the general tab show of ``org``'s settings."""
    default_ttl = int(current_app.config["ABANDON_AFTER"])
    return {
        "origins": org.allowed_origins,
        "ttl": format_duration(org.abandon_after(default_ttl)),
        "ttl_is_default": "abandon_after" not in org.settings,
        "default_ttl": format_duration(default_ttl),
        "integrations": integration_status(org.settings, current_app.config),
        "analytics_answers": analytics_answers(org.settings),
    }


def _org_cache_note() -> str:
    seconds = int(current_app.config.get("ORG_CACHE_SECONDS") or 0)
    return f" API servers apply it within {seconds} seconds." if seconds else ""


class GeneralPages(ConsoleView):
    """The general tab of SettingsView."""

    def _general_page(
        self,
        origins_form: OriginsForm | None = None,
        abandonment_form: AbandonmentForm | None = None,
        status: int = 200,
    ) -> Any:
        org = seat().org
        context = general_context(org)
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
        org = lock_org()
        before = org.allowed_origins
        tenant_services.update_org_settings(org, allowed_origins=form.origins)
        audit.record(
            org.id,
            "settings.origins_changed",
            f"org:{org.slug}",
            before={"allowed_origins": before},
            after={"allowed_origins": org.allowed_origins},
        )
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
        org = lock_org()
        before = org.settings.get("abandon_after")
        tenant_services.update_org_settings(org, abandon_after=form.seconds)
        audit.record(
            org.id,
            "settings.abandonment_changed",
            f"org:{org.slug}",
            before={"abandon_after": before},
            after={"abandon_after": form.seconds},
        )
        db.session.commit()
        flash(
            f"Sessions idle for {format_duration(form.seconds)} are now marked abandoned.",
            "success",
        )
        return redirect(self.get_url(".general"))

    @expose("/general/analytics", methods=["POST"])
    @requires(Role.ADMIN)
    def save_analytics(self) -> Any:
        form = AnalyticsForm()
        if not form.validate_on_submit():
            return self._general_page(status=422)
        org = lock_org()
        before = analytics_answers(org.settings)
        set_analytics_answers(org, bool(form.analytics_answers.data))
        audit.record(
            org.id,
            "settings.analytics_changed",
            f"org:{org.slug}",
            before={"analytics_answers": before},
            after={"analytics_answers": bool(form.analytics_answers.data)},
        )
        db.session.commit()
        flash(
            "PostHog now receives answers and message content."
            if form.analytics_answers.data
            else "PostHog now receives no answers or message content: ids, types and timings only.",
            "success",
        )
        return redirect(self.get_url(".general"))

    @expose("/general/retention", methods=["POST"])
    @requires(Role.ADMIN)
    def save_retention(self) -> Any:
        raw = (request.form.get("retention_days") or "0").strip()
        org = lock_org()
        before = erasure.retention_days_of(org)
        try:
            updated = erasure.set_retention_days(org, int(raw) if raw.isdigit() else -1)
        except erasure.ErasureError as exc:
            db.session.rollback()
            flash(f"Not saved: {exc}.", "danger")
            return redirect(self.get_url(".general"))
        kept = erasure.retention_days_of(updated)
        audit.record(
            org.id,
            "settings.retention_changed",
            f"org:{org.slug}",
            before={"retention_days": before},
            after={"retention_days": kept},
        )
        db.session.commit()
        flash(
            f"Closed sessions older than {kept} days are now erased automatically."
            if kept
            else "Sessions are kept: no automatic erasure.",
            "success",
        )
        return redirect(self.get_url(".general"))
