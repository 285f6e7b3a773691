"""`modelcert recertify-due`: the schedule's selection, once, from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Job, utcnow


def run(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcert", "recertify-due", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELCERT_DATABASE_URL": database_url, "NO_COLOR": "1", **env},
        timeout=120,
    )


def test_dry_run_shows_what_is_due_then_a_run_queues_it(
    database_url: str, factory: sessionmaker[Session]
) -> None:
    now = utcnow()
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        model = repo.add_deployment(session, provider_slug="lab", provider_model_id="m")
        session.add_all(
            [
                Certification(
                    deployment_id=model.id,
                    region="us-east-1",
                    status="CERTIFIED",
                    expires_at=now + timedelta(hours=3),
                ),
                Certification(
                    deployment_id=model.id,
                    region="eu-west-1",
                    status="ERROR",
                    completed_at=now - timedelta(hours=2),
                ),
            ]
        )

    preview = run(database_url, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert "due lab/m in us-east-1 (expiring)" in preview.stdout
    assert "eu-west-1" not in preview.stdout  # failed 2 h ago: retried after 6 h
    assert "1 due; dry run: nothing queued" in preview.stdout

    # The retry interval follows the setting.
    queued = run(database_url, "--json", MODELCERT_RECERTIFY_FAILED_AFTER_H="1")
    assert queued.returncode == 0, queued.stderr
    body = json.loads(queued.stdout)
    assert (body["dryRun"], body["queued"], body["refused"]) == (False, 2, 0)
    assert body["due_by_reason"] == {"expiring": 1, "failed": 1}
    with transaction(factory) as session:
        job = session.scalars(select(Job)).one()
    assert (job.id, job.kind, job.priority, job.created_by) == (
        body["job_id"],
        "RECERTIFY",
        "low",
        "cli:recertify-due",
    )

    again = run(database_url)
    assert again.returncode == 0, again.stderr
    assert "nothing is due for re-certification" in again.stdout


def test_a_database_without_schema_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()  # an empty file: a SQLite database without a table
    result = run(f"sqlite:///{tmp_path}/empty.db", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: database sqlite:///{tmp_path}/empty.db has no schema yet: "
        "run `modelcert db upgrade`"
    ]
