"""Exports started through the API: 202 with the job, then getJob and the download follow.

Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mentorflow.jobs import runner as jobs

SMALL_FLOW = Path(__file__).parent / "data" / "small-flow.yaml"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_export_started_by_api_is_followed_and_downloaded(
    client, create_org, publish_flow, learner
):
    keys = create_org("api-exports")
    publish_flow(keys.org, SMALL_FLOW)
    walker = learner(keys)
    walker.start("onboarding")
    walker.answer("phase-1-step-1")
    walker.answer("phase-1-step-2", "pro")

    started = client.post(
        f"/v1/orgs/{keys.slug}/jobs",
        json={"kind": "export", "flow": "onboarding"},
        headers=bearer(keys.sk),
    )
    assert started.status_code == 202, started.json
    job = started.json
    assert job["status"] == "pending" and job["download_url"] is None
    assert job["created_by"] == f"{keys.sk[:11]}…"

    jobs.run_job(job["id"])  # what the worker does with the enqueued job
    done = client.get(f"/v1/orgs/{keys.slug}/jobs/{job['id']}", headers=bearer(keys.sk))
    assert done.json["status"] == "completed"
    with client.get(done.json["download_url"], headers=bearer(keys.sk)) as download:
        assert download.status_code == 200
        rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [(row["session_id"], row["level"]) for row in rows] == [(walker.session_id, "pro")]


def test_bad_export_requests_change_nothing(client, create_org, publish_flow):
    keys = create_org("api-exports-bad")
    publish_flow(keys.org, SMALL_FLOW)
    url = f"/v1/orgs/{keys.slug}/jobs"
    unknown = client.post(url, json={"kind": "export", "flow": "nope"}, headers=bearer(keys.sk))
    assert unknown.status_code == 404
    kind = client.post(url, json={"kind": "import", "flow": "onboarding"}, headers=bearer(keys.sk))
    assert kind.status_code == 422 and "kind" in kind.json["errors"]
    filters = client.post(
        url,
        json={"kind": "export", "flow": "onboarding", "filters": {"status": "x"}},
        headers=bearer(keys.sk),
    )
    assert filters.status_code == 422
    assert (
        client.post(
            url, json={"kind": "export", "flow": "onboarding"}, headers=bearer(keys.pk)
        ).status_code
        == 403
    )
    other = create_org("api-exports-other")
    assert (
        client.post(
            url, json={"kind": "export", "flow": "onboarding"}, headers=bearer(other.sk)
        ).status_code
        == 404
    )
    listed = client.get(f"/v1/orgs/{keys.slug}/audit", headers=bearer(keys.sk)).json
    assert listed["items"] == []
