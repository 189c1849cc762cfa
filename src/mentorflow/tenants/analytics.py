"""An org's analytics opt-in: whether PostHog receives answers and message content.

By default PostHog gets what happened and when (event types, step ids and types, roles,
timings), never what a learner wrote. ``analytics_answers`` on sends step answers and message
content too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Org

ANALYTICS_ANSWERS = "analytics_answers"


def analytics_answers(settings: Mapping[str, Any]) -> bool:
    """Tell whether the org (its ``settings``) sends answers and message content to PostHog."""
    if ANALYTICS_ANSWERS in settings:
        return bool(settings[ANALYTICS_ANSWERS])
    # Before this setting, the PostHog integration's own ``send_answers`` said it.
    posthog = (settings.get("integrations") or {}).get("posthog") or {}
    return bool(posthog.get("send_answers", False))


def set_analytics_answers(org: Org, on: bool) -> Org:
    """Turn the org's analytics opt-in on or off."""
    org.settings = {**org.settings, ANALYTICS_ANSWERS: bool(on)}
    db.session.flush()
    return org
