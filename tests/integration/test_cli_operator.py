"""The CLI an operator uses every day, on real SQLite and PostgreSQL databases, in-process
(`run_command`, what `main()` runs) with a real worker in the test process where work
must be done:

- `certify` and `enqueue --wait` exit 1 when a certification is not valid (0 when every
  one is, 2 for bad input); `--wait` shows progress, takes `--timeout`, and says when
  the job waits on a paused region.
- `jobs show` takes the 8-character ids the dashboard shows (a unique prefix; an
  ambiguous one is one error line); `jobs list` filters by status, with a limit, as JSON.
- Operator controls (pause / resume, priority, cancel, retry, deactivate / reactivate,
  remove) are recorded in the audit log, which `modelcert audit` reads; deactivated
  deployments are not queued, certified or scheduled.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.jobs.schedule import recertify_due
from modelcert.settings import Settings, get_settings
from modelcert.store import repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, Job, utcnow
from tests.support.cli_inprocess import invoke
from tests.support.inprocess import FAST_AVAILABILITY_GAP_S, StartWorker

REGION = "us-east-1"
FAST_ENV = {
    "MODELCERT_AVAILABILITY_GAP_S": str(FAST_AVAILABILITY_GAP_S),
    "MODELCERT_RETRY_BASE_MS": "10",
    "MODELCERT_RETRY_MAX_MS": "100",
}


@pytest.fixture
def lab(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """A sim provider `lab` in two regions: `quick` (certified), `denied` (FAILED)."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=[REGION, "eu-west-1"])
        for name, profile in (("quick", "healthy-fast"), ("denied", "access-denied")):
            repo.add_deployment(
                session,
                provider_slug="lab",
                provider_model_id=name,
                options={"profile": profile, "latency_ms": 5},
            )
    return factory


@pytest.fixture
def cli(
    database_url: str,
    lab: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Any]:
    """`cli(*args)`: one command line in this process, on the test's database, its output
    read from buffers of its own (not capsys: the in-process worker's log handlers must
    not be left on a stream closed at the end of the test)."""
    monkeypatch.chdir(tmp_path)
    for name, value in {**FAST_ENV, "MODELCERT_DATABASE_URL": database_url}.items():
        monkeypatch.setenv(name, value)

    yield invoke
    get_settings.cache_clear()


def _job(factory: sessionmaker[Session], job_id: str) -> Job:
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_certify_exits_1_when_the_deployment_is_not_certified(cli: Any) -> None:
    certified = cli("certify", "--deployment", "lab/quick", "--region", REGION)
    assert certified.code == 0, certified.stderr
    assert "CERTIFIED" in certified.stdout
    failed = cli("certify", "--deployment", "lab/denied", "--region", REGION, "--json")
    assert failed.code == 1, failed.stderr
    assert failed.json()["status"] == "FAILED"
    assert "error:" not in failed.stderr  # a verdict, not an error


def test_enqueue_wait_shows_progress_and_exits_by_the_verdicts(
    cli: Any, start_worker: StartWorker
) -> None:
    start_worker(regions=[REGION], executor_id="w-cli")
    ok = cli("enqueue", "--deployment", "lab/quick", "--region", REGION, "--wait")
    assert ok.code == 0, ok.stderr
    assert "1/1 done (1 succeeded, 0 failed)" in ok.stderr
    assert "COMPLETED: 1 certified, 0 not" in ok.stderr

    failed = cli("enqueue", "--deployment", "lab/denied", "--region", REGION, "--wait", "--json")
    assert failed.code == 1, failed.stderr
    answer = failed.json()  # stdout stays JSON: the progress is on stderr
    assert answer["job"]["status"] == "COMPLETED"
    assert [c["status"] for c in answer["job"]["certifications"]] == ["FAILED"]

    both = cli(
        "enqueue", "--deployment", "lab/quick", "--deployment", "lab/denied",
        "--region", REGION, "--wait", "--timeout", "120",
    )  # fmt: skip
    assert both.code == 1, both.stderr
    assert "2/2 done" in both.stderr and "1 certified, 1 not" in both.stderr

    # Retry the failures of the last job: a new job, audited with the OS user.
    short = answer["jobId"][:8]
    retried = cli("jobs", "retry", short, "--priority", "high")
    assert retried.code == 0, retried.stderr
    assert f"of job {answer['jobId']} queued again" in retried.stdout


def test_enqueue_wait_says_what_the_job_waits_for_and_gives_up_at_the_timeout(
    cli: Any, lab: sessionmaker[Session], start_worker: StartWorker
) -> None:
    assert cli("region", "pause", REGION).code == 0
    waited = cli(
        "enqueue", "--deployment", "lab/quick", "--region", REGION, "--region", "eu-west-1",
        "--wait", "--timeout", "0.3",
    )  # fmt: skip
    assert waited.code == 1, waited.stderr
    assert f"region {REGION} is paused (by {getpass.getuser()}" in waited.stderr
    assert f"`modelcert region resume {REGION}`" in waited.stderr
    assert "no live worker serves region eu-west-1" in waited.stderr  # none started yet
    assert f"no live worker serves region {REGION}" not in waited.stderr  # paused says it
    assert "timed out after 0.3 s" in waited.stderr and "it goes on" in waited.stderr
    with transaction(lab) as session:
        job_id = session.scalars(select(Job.id)).one()
    assert _job(lab, job_id).status == "QUEUED"  # nothing lost: it waits

    assert cli("region", "resume", REGION).code == 0
    worker = start_worker(regions=[REGION, "eu-west-1"], executor_id="w-resumed")
    worker.drain()
    assert _job(lab, job_id).status == "COMPLETED"
    # A worker alive: no such notice (nothing waits on a pause either).
    again = cli(
        "enqueue", "--deployment", "lab/quick", "--region", "eu-west-1", "--wait", "--timeout", "60"
    )
    assert again.code == 0, again.stderr
    assert "waiting" not in again.stderr


def test_timeout_and_wait_are_checked(cli: Any) -> None:
    args = ("enqueue", "--deployment", "lab/quick", "--region", REGION)
    cli(*args, "--timeout", "5").one_error("--timeout goes with --wait")
    for bad in ("0", "-1", "nan", "inf"):
        cli(*args, "--wait", "--timeout", bad).one_error("--timeout")


def _add_jobs(factory: sessionmaker[Session], ids_and_statuses: list[tuple[str, str]]) -> None:
    """Job rows as the enqueue writes them, with chosen ids and times (an hour apart,
    the first oldest)."""
    start = utcnow() - timedelta(days=1)
    with transaction(factory) as session:
        for index, (job_id, status) in enumerate(ids_and_statuses):
            session.add(
                Job(
                    id=job_id,
                    kind="SINGLE",
                    status=status,
                    created_by="test",
                    created_at=start + timedelta(hours=index),
                )
            )


TWINS = ["abcd1234-0000-4000-8000-000000000001", "abcd1234-0000-4000-8000-000000000002"]
OTHER = "0123abcd-0000-4000-8000-000000000003"


def test_jobs_show_takes_a_unique_prefix(cli: Any, lab: sessionmaker[Session]) -> None:
    _add_jobs(lab, [(TWINS[0], "COMPLETED"), (TWINS[1], "QUEUED"), (OTHER, "RUNNING")])
    shown = cli("jobs", "show", OTHER[:8])  # the 8 characters the dashboard shows
    assert shown.code == 0, shown.stderr
    assert OTHER in shown.stdout
    assert cli("jobs", "show", OTHER[:4].upper(), "--json").json()["jobId"] == OTHER
    assert cli("jobs", "show", TWINS[1]).code == 0

    line = cli("jobs", "show", "abcd1234").one_error("ambiguous", TWINS[0], TWINS[1])
    assert len(line) < 200
    cli("jobs", "show", "abcd1234-0000-4000-8000-00000000000").one_error("ambiguous")
    cli("jobs", "show", "ffff").one_error("unknown job 'ffff'")
    cli("jobs", "show", "abc").one_error("'abc' is not a job id")
    cli("jobs", "show", "abcd1234_").one_error("is not a job id")
    cli("jobs", "cancel", "abcd").one_error("ambiguous")


def test_jobs_list_filters_by_status_with_a_limit(cli: Any, lab: sessionmaker[Session]) -> None:
    _add_jobs(lab, [(TWINS[0], "COMPLETED"), (TWINS[1], "QUEUED"), (OTHER, "COMPLETED")])
    every = cli("jobs", "list", "--json").json()
    assert [j["jobId"] for j in every] == [OTHER, TWINS[1], TWINS[0]]  # newest first
    done = cli("jobs", "list", "--status", "COMPLETED", "--json").json()
    assert [j["jobId"] for j in done] == [OTHER, TWINS[0]]
    assert {j["status"] for j in done} == {"COMPLETED"}
    two = cli("jobs", "list", "--status", "COMPLETED", "--status", "QUEUED", "--limit", "2")
    assert two.code == 0
    assert OTHER[:8] in two.stdout and TWINS[1][:8] in two.stdout
    assert TWINS[0] not in two.stdout and "abcd1234" in two.stdout  # one of the twins only
    assert cli("jobs", "list", "--status", "CANCELLED").stdout.strip() == (
        "no jobs in status CANCELLED"
    )
    cli("jobs", "list", "--status", "DONE").one_error("--status")
    cli("jobs", "list", "--limit", "0").one_error("--limit")


def test_operator_controls_are_audited_and_deactivation_stops_queuing(
    cli: Any, lab: sessionmaker[Session], settings: Settings
) -> None:
    me = getpass.getuser()
    assert cli("region", "pause", REGION).code == 0
    assert "already paused" in cli("region", "pause", REGION).stdout  # no second entry
    listed = {r["region"]: r for r in cli("region", "list", "--json").json()}
    assert listed[REGION]["paused"] and listed[REGION]["pausedBy"] == me
    assert not listed["eu-west-1"]["paused"]
    cli("region", "pause", "mars-1").one_error("unknown region 'mars-1'")

    queued = cli("enqueue", "--deployment", "lab/quick", "--region", REGION, "--json").json()
    job_id = queued["jobId"]
    assert cli("jobs", "priority", job_id[:8], "high").code == 0
    assert _job(lab, job_id).priority == "high"
    cli("jobs", "priority", job_id[:8], "urgent").one_error("'urgent' is not one of")
    assert cli("jobs", "cancel", job_id[:8]).code == 0
    assert _job(lab, job_id).status == "CANCELLED"
    cli("jobs", "cancel", job_id).one_error("already CANCELLED")
    assert cli("region", "resume", REGION).code == 0

    # Deactivated: neither queued nor certified here, nor scheduled.
    assert cli("catalog", "deactivate", "--deployment", "lab/quick").code == 0
    cli("enqueue", "--deployment", "lab/quick", "--region", REGION).one_error(
        "deployment lab/quick is not active"
    )
    cli("certify", "--deployment", "lab/quick", "--region", REGION).one_error("not active")
    assert cli("catalog", "deactivate", "--provider", "lab").code == 0
    cli("enqueue", "--deployment", "lab/denied", "--region", REGION).one_error(
        "provider lab is deactivated"
    )
    catalog = {d["provider_model_id"]: d for d in cli("catalog", "list", "--json").json()}
    assert not catalog["quick"]["active"] and not catalog["denied"]["provider_active"]
    cli("catalog", "deactivate").one_error("give one of --deployment or --provider")
    cli("catalog", "activate", "--deployment", "lab/nope").one_error("unknown deployment")
    assert cli("catalog", "activate", "--provider", "lab").code == 0

    # A FAILED certification of a deactivated deployment is not due for the schedule.
    assert cli("certify", "--deployment", "lab/denied", "--region", REGION).code == 1
    later = utcnow() + timedelta(hours=settings.recertify_failed_after_h + 1)
    due = recertify_due(lab, settings, None, now=later, dry_run=True)
    assert [(d.deployment, d.region) for d in due.due] == [("lab/denied", REGION)]
    assert cli("catalog", "deactivate", "--deployment", "lab/denied").code == 0
    assert recertify_due(lab, settings, None, now=later, dry_run=True).due == []
    assert cli("catalog", "activate", "--deployment", "lab/quick").code == 0

    # Removed, with its history (after a question not asked: --yes).
    cli("catalog", "remove-deployment", "lab/denied").one_error("add --yes")
    removed = cli("catalog", "remove-deployment", "lab/denied", "--yes")
    assert removed.code == 0, removed.stderr
    with transaction(lab) as session:
        assert session.scalar(select(func.count()).select_from(CertificationRun)) == 0
        assert [c.deployment.provider_model_id for c in session.scalars(select(Certification))] == [
            "quick"
        ]
    assert [d["provider_model_id"] for d in cli("catalog", "list", "--json").json()] == ["quick"]

    cli("catalog", "remove-provider", "lab").one_error("add --yes")
    cli("catalog", "remove-provider", "No Such!", "--yes").one_error("PROVIDER")
    cli("catalog", "remove-provider", "nope", "--yes").one_error("unknown provider 'nope'")

    entries = cli("audit", "--json").json()
    assert [(e["action"], e["target"]) for e in entries] == [
        ("deployment.remove", "lab/denied"),
        ("deployment.activate", "lab/quick"),
        ("deployment.deactivate", "lab/denied"),
        ("provider.activate", "lab"),
        ("provider.deactivate", "lab"),
        ("deployment.deactivate", "lab/quick"),
        ("region.resume", REGION),
        ("job.cancel", job_id),
        ("job.priority", job_id),
        ("region.pause", REGION),
    ]
    assert {(e["actor"], e["interface"]) for e in entries} == {(me, "cli")}
    assert entries[7]["details"] == {"cancelled": 1}
    assert entries[8]["details"] == {"priority": "high", "changed": 1}

    regions_only = cli("audit", "--action", "region", "--json").json()
    assert [e["action"] for e in regions_only] == ["region.resume", "region.pause"]
    assert len(cli("audit", "--limit", "2", "--json").json()) == 2
    assert cli("audit", "--since", "1h", "--actor", "someone-else", "--json").json() == []
    table = cli("audit")
    assert table.code == 0 and "deployment.remove" in table.stdout and me in table.stdout
    cli("audit", "--action", "region.explode").one_error("--action")
    cli("audit", "--since", "yesterday").one_error("--since")
    cli("audit", "--since", "1h", "--until", "2h").one_error("--until must be after --since")


def test_a_provider_is_removed_with_its_history(cli: Any, lab: sessionmaker[Session]) -> None:
    assert cli("certify", "--deployment", "lab/quick", "--region", REGION).code == 0
    removed = cli("catalog", "remove-provider", "lab", "--yes")
    assert removed.code == 0, removed.stderr
    assert "with its 2 deployment(s)" in removed.stdout
    assert cli("catalog", "list", "--json").json() == []
    with transaction(lab) as session:
        assert session.scalar(select(func.count()).select_from(CertificationRun)) == 0
    assert [e["action"] for e in cli("audit", "--json").json()] == ["provider.remove"]


# What the property test of tests/integration/test_cli_errors.py does for the older
# commands, for these: any value as any argument exits 0, 1 or 2, never a traceback.
OPERATOR_INPUTS = [
    ("jobs", "show", "{}"),
    ("jobs", "cancel", "{}"),
    ("jobs", "retry", "{}"),
    ("jobs", "priority", "{}", "high"),
    ("jobs", "list", "--limit", "{}"),
    ("region", "pause", "{}"),
    ("region", "resume", "{}"),
    ("catalog", "deactivate", "--deployment", "{}"),
    ("catalog", "activate", "--provider", "{}"),
    ("catalog", "remove-deployment", "{}"),
    ("catalog", "remove-provider", "{}"),
    ("audit", "--since", "{}"),
    ("audit", "--until", "{}"),
    ("audit", "--action", "{}"),
    ("audit", "--actor", "{}"),
    ("runs", "export", "--since", "{}"),
    ("runs", "export", "--deployment", "{}"),
    ("runs", "export", "--region", "{}"),
    ("runs", "diff", "{}", "1"),
    # Not with --wait: a large valid timeout would wait that long for a worker.
    ("enqueue", "--deployment", "lab/quick", "--region", REGION, "--timeout", "{}"),
]


@pytest.mark.parametrize("value", ["\x00", "lab/\x00", "x\x1b[31m"], ids=["nul", "ref-nul", "esc"])
@pytest.mark.parametrize("template", OPERATOR_INPUTS, ids=lambda t: " ".join(t[:3]))
def test_a_control_character_in_any_argument_is_never_a_traceback(
    cli: Any, template: tuple[str, ...], value: str
) -> None:
    # PostgreSQL refuses NUL in text: `audit --actor $'\\0'` was a DataError traceback there,
    # found by the property test below. Every argument, deterministically.
    args = [value if part == "{}" else part for part in template]
    result = cli(*args)
    assert "Traceback" not in result.stdout + result.stderr, (args, result.stderr)
    assert result.code in (0, 1, 2), (args, result.code, result.stderr)
    if result.code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)


def test_a_nul_that_reaches_the_database_is_still_one_line(
    factory: sessionmaker[Session],
) -> None:
    # The net under the options' validation: what PostgreSQL raises for NUL in text is
    # recognised as the user's; SQLite stores it, so there is nothing to catch there.
    from sqlalchemy import Text, literal
    from sqlalchemy.exc import DataError

    from modelcert.cli import _is_nul_refused

    query = select(literal("lab\x00", type_=Text()))
    with transaction(factory) as session:
        if session.get_bind().dialect.name == "sqlite":
            assert session.execute(query).scalar_one() == "lab\x00"
            return
        with pytest.raises(DataError) as raised:
            session.execute(query)
    assert _is_nul_refused(raised.value)
    assert not _is_nul_refused(ValueError("NUL (0x00)"))


def test_arbitrary_values_are_never_a_traceback(cli: Any) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.one_of(
        st.text(max_size=40),
        st.integers().map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from(
            ["²", "abcd", "0000-", "9999-12-31", "-1", "lab/²", "a" * 300, "\x00", "lab/\x00"]
        ),
    )

    @settings(max_examples=40, deadline=None, database=None)
    @given(template=st.sampled_from(OPERATOR_INPUTS), value=values)
    def check(template: tuple[str, ...], value: str) -> None:
        args = [value if part == "{}" else part for part in template]
        result = cli(*args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output, (args, output)
        assert result.code in (0, 1, 2), (args, result.code, output)
        if result.code == 2:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)

    check()


def test_enqueue_wait_and_jobs_show_say_why_a_certification_did_not_start(
    cli: Any, lab: sessionmaker[Session], start_worker: StartWorker
) -> None:
    """A budget that one certification would exceed: it is not started, and the CLI says
    so with the reason, not only a count of failures."""
    with transaction(lab) as session:
        quick = repo.find_deployment(session, "lab/quick")
        quick.cost_input_per_mtok, quick.cost_output_per_mtok = 3.0, 15.0
    start_worker(regions=[REGION], executor_id="w-budget")
    poor = cli(
        "enqueue", "--deployment", "lab/quick", "--region", REGION, "--wait",
        "--budget-usd", "0.0000001",
    )  # fmt: skip
    assert poor.code == 1, poor.stderr
    assert "lab/quick us-east-1: SKIPPED — not started: the job's budget" in poor.stderr
    with transaction(lab) as session:
        job_id = session.scalars(select(Job.id)).one()
    shown = cli("jobs", "show", job_id[:8])
    assert "SKIPPED" in shown.stdout and "not started: the job's budget" in shown.stdout

    paid = cli("enqueue", "--deployment", "lab/quick", "--region", REGION, "--wait")
    assert paid.code == 0, paid.stderr
    assert re.search(r"COMPLETED: 1 certified, 0 not .*, cost \$0\.\d{6}", paid.stderr)
