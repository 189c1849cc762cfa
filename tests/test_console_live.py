"""The console's live pages: a flow's room and the streams behind it, scoped to the org."""

from __future__ import annotations

import json
import re

from mentorflow.platform.push import current_hub
from mentorflow.tenants.models import Role
from test_console_learners import S1, flow_id, mini_flow, sign_in, walk  # noqa: F401

ROOM_LEARNERS = re.compile(
    r'<script type="application/json" id="room-learners"[^>]*>(.*?)</script>'
)


def test_the_room_shows_who_is_on_which_step_to_mentors_of_the_org_only(
    create_org,
    publish_flow,
    walk,  # noqa: F811 - the fixture imported above
    sign_in,  # noqa: F811
):
    org = create_org()
    publish_flow(org.org, mini_flow())
    at_second = walk(org, "mini", (S1, "long"), name="Grace")
    at_first = walk(org, "mini", email="ada@example.com")
    mini = flow_id(org.org, "mini")

    mentor = sign_in(org.org, Role.MENTOR)
    page = mentor.get(f"/admin/live/{mini}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    learners = {row["id"]: row for row in json.loads(ROOM_LEARNERS.search(html).group(1))}
    assert learners[at_second]["step_id"] == "phase-1-step-2"
    assert learners[at_second]["label"] == "Grace"
    assert learners[at_first]["step_id"] == S1
    assert learners[at_first]["label"] == "ada@example.com"
    assert 'data-step-id="phase-1-step-2"' in html

    stream = mentor.get(f"/admin/live/{mini}/stream")
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    assert stream.headers["X-Accel-Buffering"] == "no"
    stream.close()
    session_stream = mentor.get(f"/admin/live/sessions/{at_second}/stream")
    assert session_stream.status_code == 200
    session_stream.close()  # as a server does: the stream lets its subscription go
    assert current_hub().subscriber_count == 0

    # Names and positions are learners' personal data: not for viewers.
    viewer = sign_in(org.org, Role.VIEWER)
    assert viewer.get(f"/admin/live/{mini}").status_code == 403
    assert viewer.get(f"/admin/live/{mini}/stream").status_code == 403

    other = create_org()
    publish_flow(other.org, mini_flow())
    owner = sign_in(other.org, Role.OWNER)
    for url in (
        f"/admin/live/{mini}",
        f"/admin/live/{mini}/stream",
        f"/admin/live/sessions/{at_second}/stream",
    ):
        response = owner.get(url)
        assert response.status_code == 404, url
        assert "Grace" not in response.get_data(as_text=True)
