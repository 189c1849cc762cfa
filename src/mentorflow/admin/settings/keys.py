"""The API keys tab of the settings: create and revoke the org's keys."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from flask import flash, redirect
from flask_admin import expose
from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField

from mentorflow.admin.access import ConsoleView, for_org, requires, seat
from mentorflow.admin.settings.base import lock_org, no_store
from mentorflow.platform.extensions import db
from mentorflow.tenants import audit
from mentorflow.tenants import services as tenant_services
from mentorflow.tenants.models import ApiKey, KeyKind, Role

log = logging.getLogger(__name__)


class ApiKeyForm(FlaskForm):
    kind = SelectField(
        "Kind",
        choices=[
            SelectChoice(KeyKind.PUBLISHABLE.value, "Publishable (pk_…)"),
            SelectChoice(KeyKind.SECRET.value, "Secret (sk_…)"),
        ],
    )


class KeyPages(ConsoleView):
    """The API keys tab of SettingsView."""

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
        org = lock_org()
        key, secret = tenant_services.create_api_key(org, KeyKind(form.kind.data))
        audit.record(org.id, "key.created", f"key:{key.prefix}", after={"kind": str(key.kind)})
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
        return no_store(page, 201)

    @expose("/keys/<int:key_id>/revoke", methods=["POST"])
    @requires(Role.ADMIN)
    def revoke_key(self, key_id: int) -> Any:
        org = lock_org()
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
        audit.record(
            org.id,
            "key.revoked",
            f"key:{key.prefix}",
            before={"kind": str(key.kind), "revoked": False},
            after={"kind": str(key.kind), "revoked": True},
        )
        db.session.commit()
        log.info("API key %s… revoked in org %s by %s", key.prefix, org.slug, seat().user.email)
        flash(f"Revoked {key.prefix}…: requests with it now get 401.", "success")
        return redirect(self.get_url(".keys"))
