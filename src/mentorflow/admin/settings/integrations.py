"""The integrations tab of the settings: the org's own credentials of each sink, and a test."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import Length, Optional, ValidationError

from mentorflow.admin.access import ConsoleView, requires, seat
from mentorflow.admin.settings.base import lock_org
from mentorflow.delivery.integrations import integration_status, send_test_event, set_integration
from mentorflow.delivery.sinks import DeliveryFailed, SinkType, sink_types
from mentorflow.platform.extensions import db
from mentorflow.platform.outbound import OutboundRefused, check_url
from mentorflow.tenants import audit
from mentorflow.tenants.models import Role

log = logging.getLogger(__name__)


class IntegrationForm(FlaskForm):
    api_key = PasswordField("API key", validators=[Optional(), Length(max=500)])
    url = StringField("URL", validators=[Optional(), Length(max=500)])
    send_answers = BooleanField("Send answers to PostHog")

    def validate_url(self, field: StringField) -> None:
        url = field.data.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("Give an http(s) URL such as https://eu.i.posthog.com.")
        # Checked again at every connection (DNS can change); here to say so early.
        try:
            check_url(url, allow_private=bool(current_app.config.get("ALLOW_PRIVATE_SINKS")))
        except OutboundRefused as exc:
            raise ValidationError(f"This URL can't receive events: {exc.reason}.") from exc


class IntegrationPages(ConsoleView):
    """The integrations tab of SettingsView: one card per registered sink."""

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
        org = lock_org()
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
        audit.record(
            org.id,
            "integration.changed",
            f"integration:{sink}",
            before={"url": own.get("url"), "send_answers": own.get("send_answers")},
            after={
                "url": url or own.get("url"),
                "key_replaced": bool(api_key),
                "send_answers": bool(form.send_answers.data) if sink == "posthog" else None,
            },
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
        org = lock_org()
        before = (org.settings.get("integrations") or {}).get(sink) or {}
        set_integration(org, sink, current_app.config, clear=True)
        audit.record(
            org.id,
            "integration.cleared",
            f"integration:{sink}",
            before={"url": before.get("url"), "own_key": bool(before.get("api_key_encrypted"))},
            after={"url": None, "own_key": False},
        )
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
