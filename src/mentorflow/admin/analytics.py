"""The console's analytics page: a flow's funnel over a date range."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import request
from flask_admin import expose

from mentorflow.admin.access import for_org, seat
from mentorflow.admin.learners import LearnerView, day_range, org_flows, read_days, version_of
from mentorflow.flows.analytics import TIMING_EVENT_LIMIT, flow_funnel
from mentorflow.flows.authoring import flow_versions
from mentorflow.flows.models import Flow
from mentorflow.platform.db import utcnow

DEFAULT_RANGE_DAYS = 30


class AnalyticsView(LearnerView):
    """Funnels per flow and version over a date range: aggregates only, for every role."""

    @expose("/")
    def index(self) -> Any:
        org = seat().org
        flows = org_flows(org.id)
        flow_id = request.args.get("flow", type=int)
        flow = for_org(Flow, flow_id) if flow_id else (flows[0] if flows else None)
        version = version_of(flow, request.args.get("version", type=int)) if flow else None
        since, until = read_days(DEFAULT_RANGE_DAYS)
        funnel = None
        if flow is not None:
            funnel = flow_funnel(org.id, flow, version, *day_range(since, until))
        today = utcnow().date()
        quick_ranges = [(days, today - timedelta(days=days - 1), today) for days in (7, 30, 90)]
        return self.render(
            "console/analytics/index.html",
            flows=flows,
            flow=flow,
            version=version,
            versions=flow_versions(flow),
            since=since,
            until=until,
            funnel=funnel,
            quick_ranges=quick_ranges,
            timing_limit=TIMING_EVENT_LIMIT,
        )


def views() -> list[Any]:
    """Return this module's console views, in menu order."""
    return [AnalyticsView(name="Analytics", endpoint="analytics", url="/admin/analytics")]
