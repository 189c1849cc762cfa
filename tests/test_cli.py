"""The operator CLI, run as operators run it: the installed ``mentorflow`` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
MENTORFLOW = shutil.which("mentorflow") or str(Path(sys.executable).parent / "mentorflow")


@pytest.fixture
def cli(tmp_path):
    """Run ``mentorflow`` in a fresh instance folder from an unrelated working directory."""
    env = {**os.environ, "MENTORFLOW_INSTANCE_PATH": str(tmp_path / "instance")}
    env.pop("MENTORFLOW_DATABASE_URL", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(
        *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [MENTORFLOW, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=elsewhere,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    run("db", "upgrade")
    return run


def test_org_key_flow_lifecycle(cli, tmp_path):
    assert "created organization acme" in cli("org", "create", "acme", "--name", "Acme").stdout
    duplicate = cli("org", "create", "acme", "--name", "Acme", check=False)
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr

    secret = cli("key", "create", "acme", "--kind", "secret").stdout.strip().splitlines()[-1]
    assert secret.startswith("sk_") and len(secret) > 40

    pushed = cli(
        "flow", "push", "acme", str(DATA / "small-flow.yaml"), "--publish", "--notes", "first"
    )
    assert "published version 1" in pushed.stdout
    again = cli("flow", "push", "acme", str(DATA / "small-flow.yaml"), "--publish")
    assert "version 1 already has this content" in again.stdout

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        (DATA / "small-flow.yaml").read_text().replace("Studio onboarding", "Studio onboarding, v2")
    )
    assert "published version 2" in cli("flow", "push", "acme", str(changed), "--publish").stdout
    assert "Studio onboarding, v2" in cli("flow", "pull", "acme", "onboarding").stdout
    v1 = cli("flow", "pull", "acme", "onboarding", "--version", "1").stdout
    assert "title: Studio onboarding\n" in v1
    assert (
        "version 1 is published again" in cli("flow", "rollback", "acme", "onboarding", "1").stdout
    )
    missing = cli("flow", "rollback", "acme", "onboarding", "9", check=False)
    assert missing.returncode != 0 and "no version 9" in missing.stderr

    revoked = cli("key", "revoke", "acme", secret[:11])
    assert "revoked" in revoked.stdout


def test_bad_document_exits_nonzero_with_field_paths(cli, tmp_path):
    cli("org", "create", "acme", "--name", "Acme")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (DATA / "small-flow.yaml").read_text().replace("goto: phase-2-step-2", "goto: nowhere")
    )
    result = cli("flow", "push", "acme", str(bad), check=False)
    assert result.returncode != 0
    assert str(bad) in result.stderr
    assert "phases[0].steps[1].next[0].goto: unknown step 'nowhere'" in result.stderr


def test_org_settings_and_staff(cli):
    cli("org", "create", "acme", "--name", "Acme")
    result = cli(
        "org",
        "set",
        "acme",
        "--allowed-origins",
        "https://a.example,http://localhost:3000",
        "--abandon-after",
        "3d",
    )
    assert "https://a.example" in result.stdout and "259200s" in result.stdout
    bad = cli("org", "set", "acme", "--abandon-after", "soon", check=False)
    assert bad.returncode != 0 and "30m, 12h, 7d" in bad.stderr
    staff = cli(
        "staff",
        "create",
        "Mentor@Acme.example",
        "--org",
        "acme",
        "--role",
        "mentor",
        stdin="correct horse battery\n",
    )
    assert "mentor@acme.example is mentor of acme" in staff.stdout
    short = cli(
        "staff",
        "create",
        "x@acme.example",
        "--org",
        "acme",
        "--role",
        "viewer",
        stdin="short\n",
        check=False,
    )
    assert short.returncode != 0 and "at least 8" in short.stderr


def test_demo_is_idempotent_and_prints_working_keys(cli):
    first = cli("demo").stdout
    second = cli("demo").stdout
    assert first == second
    assert "publishable key pk_" in first and "secret key      sk_" in first
    assert "/admin/" in first and "curl" in first
