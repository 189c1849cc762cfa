"""What the learner pages (sessions, analytics, jobs) share: base view, paging, date ranges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask import abort, flash, request

from mentorflow.admin.access import ConsoleView
from mentorflow.flows.analytics import format_elapsed
from mentorflow.flows.models import Flow, FlowVersion
from mentorflow.platform.db import fits_integer, utcnow
from mentorflow.platform.extensions import db

PAGE_SIZE = 50


#: The days a date filter may name: a day past the last leaves no room for its end bound
#: (the next midnight), and none of our data is older than the first.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


def parse_day(value: str | None) -> date | None:
    """Return the date of an ``<input type=date>`` value; raise ValueError on anything else."""
    if not value:
        return None
    day = date.fromisoformat(value)
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"{value} is not between {FIRST_DAY} and {LAST_DAY}")
    return day


def day_range(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Return UTC bounds [start, end) covering the days ``since`` to ``until``, both included."""
    start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC) if until else None
    return start, end


def read_days(default_days: int | None) -> tuple[date | None, date | None]:
    """Return the ``since``/``until`` query arguments, flashing and defaulting bad ones."""
    today = utcnow().date()
    default_since = today - timedelta(days=default_days - 1) if default_days else None
    default_until = today if default_days else None
    try:
        since = parse_day(request.args.get("since")) or default_since
        until = parse_day(request.args.get("until")) or default_until
    except ValueError:
        flash(
            f"Dates are YYYY-MM-DD from {FIRST_DAY.year} to {LAST_DAY.year}; "
            "showing the default range instead.",
            "warning",
        )
        return default_since, default_until
    if since and until and since > until:
        flash("The start date was after the end date; they have been swapped.", "info")
        since, until = until, since
    return since, until


def version_of(flow: Flow, number: int | None) -> FlowVersion | None:
    """Return version ``number`` of ``flow`` (None for all versions); 404 if it has none."""
    if number is None:
        return None
    if not fits_integer(number):
        abort(404)
    version = db.session.scalars(
        sa.select(FlowVersion).where(
            FlowVersion.flow_id == flow.id,
            FlowVersion.number == number,
            FlowVersion.preview.is_(False),
        )
    ).first()
    if version is None:
        abort(404)
    return version


def org_flows(org_id: int) -> list[Flow]:
    """Return the org's flows for a picker, archived ones last."""
    return list(
        db.session.scalars(
            sa.select(Flow)
            .where(Flow.org_id == org_id)
            .order_by(Flow.archived_at.is_not(None), Flow.title)
        ).all()
    )


def requested_page(total: int) -> tuple[int, int]:
    """Return the requested page number, kept within the pages ``total`` rows fill, and those."""
    pages = max(1, -(-total // PAGE_SIZE))
    return min(pages, max(1, request.args.get("page", 1, type=int))), pages


class LearnerView(ConsoleView):
    """A console page about learners: templates get the duration formatter."""

    def render(self, template: str, **kwargs: Any) -> str:
        kwargs.setdefault("duration", format_elapsed)
        return super().render(template, **kwargs)
