"""Publishing over live sessions: the console's dialog to move them to the new version."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request
from flask_admin import expose

from mentorflow.admin.access import for_org, requires, seat
from mentorflow.admin.jobs import hand_to_workers
from mentorflow.flows import migration
from mentorflow.flows.models import Flow
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role

#: How often the dialog reloads while the move runs, in seconds.
REFRESH_SECONDS = 1


class SessionMigration:
    """Console endpoints of the migration dialog, mixed into the Flows view."""

    @expose("/<int:flow_id>/migrate", methods=["GET"])
    @requires(Role.MENTOR)
    def migrate(self, flow_id: int) -> Any:
        """Show the active sessions on older versions, a dry run, or a running move."""
        flow = for_org(Flow, flow_id)
        target = flow.published_version
        if target is None:
            flash("Publish the draft first: sessions move to a published version.", "warning")
            return redirect(self.get_url(".edit", flow_id=flow.id))  # type: ignore[attr-defined]
        job = None
        job_id = request.args.get("job", type=int)
        if job_id is not None:
            job = for_org(Job, job_id)
            if job.kind != migration.MIGRATE_SESSIONS or job.params.get("flow_id") != flow.id:
                abort(404)
        running = job is not None and job.status in (JobStatus.PENDING, JobStatus.RUNNING)
        plan = migration.dry_run(flow, target) if request.args.get("check") and not job else None
        return self.render(  # type: ignore[attr-defined]
            "console/flows/migrate.html",
            flow=flow,
            target=target,
            counts=migration.count_on_older_versions(flow, target),
            plan=plan,
            movable=[move for move in plan or [] if move.can_move],
            pinned=[move for move in plan or [] if not move.can_move],
            job=job,
            refresh=REFRESH_SECONDS if running else None,
        )

    @expose("/<int:flow_id>/migrate", methods=["POST"])
    @requires(Role.MENTOR)
    def start_migration(self, flow_id: int) -> Any:
        """Start the background job that moves the movable sessions to the published version."""
        flow = for_org(Flow, flow_id)
        target = flow.published_version
        if target is None or request.form.get("version", type=int) != target.number:
            flash("The published version changed; check again before moving sessions.", "warning")
            return redirect(self.get_url(".migrate", flow_id=flow.id))  # type: ignore[attr-defined]
        begin_write(db.session)
        job = migration.create_migration(seat().org, flow, target, by=seat().user.email)
        db.session.commit()
        hand_to_workers(job, f"Moving sessions to v{target.number}: this page follows the job.")
        return redirect(self.get_url(".migrate", flow_id=flow.id, job=job.id))  # type: ignore[attr-defined]
