"""Console pages for authoring flows: drafts in YAML, publishing, versions, diffs, rollback."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import sqlalchemy as sa
from flask import Response, flash, redirect, request
from flask_admin import expose

from mentorflow.admin.access import ConsoleView, for_org, requires, seat
from mentorflow.admin.flow_editor import (
    DraftEditing,
    draft_state,
    editor_settings,
    save_edited_draft,
    step_changes,
)
from mentorflow.admin.flow_migration import SessionMigration
from mentorflow.admin.flow_preview import DraftPreview
from mentorflow.flows import authoring
from mentorflow.flows.analytics import sessions_per_flow
from mentorflow.flows.document import (
    DocumentError,
    FieldError,
    checksum,
    dump_document,
    load_document,
)
from mentorflow.flows.migration import count_on_older_versions
from mentorflow.flows.models import Flow, PublishLog
from mentorflow.platform.db import utcnow
from mentorflow.platform.extensions import db
from mentorflow.platform.text import text_problem
from mentorflow.tenants import audit
from mentorflow.tenants.models import Role

STARTER = """slug: my-flow
title: My first flow
phases:
  - id: phase-1
    title: Getting to know you
    steps:
      - id: phase-1-step-1
        type: text
        key: goal
        prompt: What do you want to get out of this?
"""


def _load(text: str) -> tuple[dict[str, Any] | None, list[Any]]:
    try:
        return load_document(text), []
    except DocumentError as exc:
        return None, exc.errors


class FlowsView(DraftEditing, DraftPreview, SessionMigration, ConsoleView):
    """Flows of the current org."""

    def _flow(self, flow_id: int) -> Flow:
        return for_org(Flow, flow_id)

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        counts = sessions_per_flow(org.id)
        flows = db.session.scalars(
            sa.select(Flow)
            .where(Flow.org_id == org.id)
            .order_by(Flow.archived_at.is_not(None), Flow.title)
        ).all()
        rows = []
        for flow in flows:
            published = flow.published_version
            rows.append(
                {
                    "flow": flow,
                    "published": published,
                    "draft_changed": published is None
                    or published.checksum != checksum(flow.draft),
                    "sessions": counts.get(flow.id, 0),
                }
            )
        return self.render("console/flows/index.html", rows=rows)

    @expose("/new", methods=["GET", "POST"])
    @requires(Role.MENTOR)
    def create(self) -> Any:
        text, errors = STARTER, []
        if request.method == "POST" and "document" not in request.form:
            return self._create_from_title(request.form.get("title", ""))
        if request.method == "POST":
            text = request.form.get("document", "")
            definition, errors = _load(text)
            if definition is not None:
                if authoring.find_flow(seat().org.id, definition["slug"]) is not None:
                    errors = [_error("slug", f"a flow '{definition['slug']}' exists already")]
                else:
                    flow, _ = authoring.save_draft(seat().org, definition)
                    audit.record(
                        flow.org_id,
                        "flow.created",
                        f"flow:{flow.slug}",
                        after={"title": flow.title},
                    )
                    db.session.commit()
                    flash(f"Created the draft of “{flow.title}”.", "success")
                    return redirect(self.get_url(".edit", flow_id=flow.id))
        return self.render(
            "console/flows/edit.html", flow=None, text=text, errors=errors, revision=None
        )

    def _create_from_title(self, title: str) -> Any:
        title = " ".join(title.split())[:200]
        problem = text_problem(title)
        if problem:
            flash(f"The title cannot be stored: {problem}", "danger")
            return redirect(self.get_url(".create"))
        base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "flow"
        slug, n = base, 1
        while authoring.find_flow(seat().org.id, slug) is not None:
            n += 1
            slug = f"{base}-{n}"
        try:
            definition = load_document(
                STARTER.replace("slug: my-flow", f"slug: {slug}").replace(
                    "title: My first flow", f"title: {json.dumps(title or 'My first flow')}"
                )
            )
        except DocumentError as exc:
            return self.render(
                "console/flows/edit.html", flow=None, text=STARTER, errors=exc.errors, revision=None
            )
        flow, _ = authoring.save_draft(seat().org, definition)
        audit.record(flow.org_id, "flow.created", f"flow:{flow.slug}", after={"title": flow.title})
        db.session.commit()
        flash(f"Created the draft of “{flow.title}”. Add phases and steps below.", "success")
        return redirect(self.get_url(".edit", flow_id=flow.id))

    @expose("/<int:flow_id>", methods=["GET", "POST"])
    def edit(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        text, errors, revision = dump_document(flow.draft), [], flow.draft_revision
        if request.method == "POST":
            if not seat().can(Role.MENTOR):
                return Response("Viewers cannot change flows.", status=403)
            text = request.form.get("document", "")
            revision = request.form.get("draft_revision", type=int)
            definition, errors = _load(text)
            if revision is None:
                # The page always sends the revision it showed; without it a save could
                # overwrite a colleague's edit.
                errors = [_error("draft_revision", "the page sent no revision number; reload it")]
            elif definition is not None and definition["slug"] != flow.slug:
                errors = [
                    _error(
                        "slug",
                        f"the slug of this flow is '{flow.slug}'; "
                        "create a new flow for another slug",
                    )
                ]
            if definition is not None and not errors:
                try:
                    save_edited_draft(flow, definition, revision)
                except authoring.DraftConflict as exc:
                    errors = [_error("", str(exc))]
                else:
                    db.session.commit()
                    flash("Draft saved.", "success")
                    return redirect(self.get_url(".edit", flow_id=flow.id))
        versions = authoring.flow_versions(flow)
        return self.render(
            "console/flows/edit.html",
            flow=flow,
            text=text,
            errors=errors,
            revision=revision,
            versions=versions,
            view="yaml" if errors or request.args.get("view") == "yaml" else "editor",
            editor={"draft": draft_state(flow), **editor_settings()},
            draft_changed=flow.published_version is None
            or flow.published_version.checksum != checksum(flow.draft),
        )

    @expose("/<int:flow_id>/publish", methods=["POST"])
    @requires(Role.MENTOR)
    def publish(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        version, created = authoring.publish_version(
            flow, notes=request.form.get("notes") or None, by=seat().user.email
        )
        if created:
            audit.record(
                flow.org_id,
                "flow.published",
                f"flow:{flow.slug}",
                after={"version": version.number},
            )
        db.session.commit()
        flash(
            f"Published version {version.number}."
            if created
            else f"Version {version.number} already has this content.",
            "success",
        )
        if created and count_on_older_versions(flow, version):
            # Active learners stay on their version unless the mentor chooses to move them.
            return redirect(self.get_url(".migrate", flow_id=flow.id))
        return redirect(self.get_url(".edit", flow_id=flow.id))

    @expose("/<int:flow_id>/versions")
    def versions(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        log = db.session.scalars(
            sa.select(PublishLog)
            .where(PublishLog.flow_id == flow.id)
            .order_by(PublishLog.at.desc())
        ).all()
        return self.render(
            "console/flows/versions.html",
            flow=flow,
            versions=authoring.flow_versions(flow),
            log=log,
        )

    @expose("/<int:flow_id>/diff")
    def diff(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        numbers = {v.number: v for v in authoring.flow_versions(flow)}
        a, b = request.args.get("a", type=int), request.args.get("b", type=int)
        if a not in numbers or b not in numbers:
            return Response("Pick two versions of this flow.", status=404)
        old, new = numbers[a].definition, numbers[b].definition
        text = "".join(
            difflib.unified_diff(
                dump_document(old).splitlines(keepends=True),
                dump_document(new).splitlines(keepends=True),
                fromfile=f"version {a}",
                tofile=f"version {b}",
            )
        )
        return self.render(
            "console/flows/diff.html",
            flow=flow,
            a=a,
            b=b,
            changes=step_changes(old, new),
            text=text,
        )

    @expose("/<int:flow_id>/rollback", methods=["POST"])
    @requires(Role.MENTOR)
    def rollback(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        number = request.form.get("version", type=int)
        before = flow.published_version.number if flow.published_version else None
        try:
            authoring.rollback_flow(flow, number or 0, by=seat().user.email)
        except authoring.FlowError as exc:
            flash(str(exc).capitalize() + ".", "danger")
        else:
            audit.record(
                flow.org_id,
                "flow.rolled_back",
                f"flow:{flow.slug}",
                before={"version": before},
                after={"version": number},
            )
            db.session.commit()
            flash(
                f"Version {number} is published again; sessions already started keep theirs.",
                "success",
            )
        return redirect(self.get_url(".versions", flow_id=flow.id))

    @expose("/<int:flow_id>/archive", methods=["POST"])
    @requires(Role.ADMIN)
    def archive(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        flow.archived_at = None if flow.archived_at else utcnow()
        audit.record(
            flow.org_id,
            "flow.archived" if flow.archived_at else "flow.restored",
            f"flow:{flow.slug}",
            before={"archived": flow.archived_at is None},
            after={"archived": flow.archived_at is not None},
        )
        db.session.commit()
        flash(
            "Archived: learners can no longer start it." if flow.archived_at else "Restored.",
            "info",
        )
        return redirect(self.get_url(".index"))

    @expose("/<int:flow_id>/export")
    def export(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        number = request.args.get("version", type=int)
        definition = flow.draft
        if number is not None:
            try:
                definition = authoring.get_version(flow, number).definition
            except authoring.FlowError as exc:
                return Response(f"{str(exc).capitalize()}.", status=404)
        name = f"{flow.slug}{'-v' + str(number) if number else '-draft'}.yaml"
        return Response(
            dump_document(definition),
            mimetype="application/yaml",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @expose("/import", methods=["POST"])
    @requires(Role.MENTOR)
    def import_document(self) -> Any:
        upload = request.files.get("document")
        if upload is None or not upload.filename:
            flash("Choose a YAML or JSON file to import.", "warning")
            return redirect(self.get_url(".index"))
        text = upload.read().decode("utf-8", errors="replace")
        definition, errors = _load(text)
        if definition is None:
            return self.render(
                "console/flows/edit.html", flow=None, text=text, errors=errors, revision=None
            )
        flow, created = authoring.save_draft(seat().org, definition)
        audit.record(
            flow.org_id,
            "flow.imported",
            f"flow:{flow.slug}",
            after={"created": created, "file": upload.filename},
        )
        db.session.commit()
        flash(
            f"{'Created' if created else 'Updated'} the draft of “{flow.title}” from "
            f"{upload.filename}.",
            "success",
        )
        return redirect(self.get_url(".edit", flow_id=flow.id))

    @expose("/<int:flow_id>/preview")
    def preview(self, flow_id: int) -> Any:
        flow = self._flow(flow_id)
        return self.render("console/flows/preview.html", flow=flow, definition=flow.draft)


def _error(path: str, message: str) -> Any:
    return FieldError(path=path, message=message)
