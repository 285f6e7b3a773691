"""Many machines, really: PostgreSQL and three workers on four "hosts" (Linux network
namespaces joined by veth pairs to a bridge, tests/support/netns.py), a batch certified
across them, one host's link cut and another host's worker killed with kill -9.

    root namespace (this test: enqueues, reads results)   10.77.N.1  bridge mcn…-br
        ├── veth ── pg  10.77.N.2   PostgreSQL 15 (tests/support/pg_cluster.py)
        ├── veth ── h1  10.77.N.3   modelcert worker h1 (the one left: it reaps)
        ├── veth ── h2  10.77.N.4   modelcert worker h2 ← link cut, then restored
        └── veth ── h3  10.77.N.5   modelcert worker h3 ← kill -9

The faults land while both victims have certifications mid-way. h2's link stays down until
the reaper (on h1, the one worker that still reaches the database) has handed the work of
both over (longer than MODELCERT_WORKER_DEAD_AFTER_S); then it comes back. The test then
asserts, from the database and the simulator's call log (tests/support/chaos_analysis.py,
as the chaos test counts them):

- every certification of the job ends with exactly one run and one verdict (CERTIFIED:
  the deployments are healthy), none lost, none left RUNNING, the job COMPLETED;
- no certification executed in two processes at once, and no test paid for twice except
  the one in flight in each certification a fault interrupted;
- each run holds each test of the battery once, and the current certification points at
  that run;
- fencing: h2's executions, superseded while it was cut off, write nothing once its link
  is back: the verdicts (and test rows) read when the job completed are unchanged after h2
  has rejoined and run more work;
- h2 rejoins: it heartbeats again, is ready, and certifies a follow-up job in a region
  only it serves.

Root is needed (namespaces, veths, a bridge); it skips elsewhere with the reason, and fails
instead when MODELCERT_REQUIRE_NETNS=1 (.ci/run). The report (counts, fault times) is
written to `netns-report.json` in the test's temporary directory, beside the workers' logs
and PostgreSQL's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.domain import JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.providers.sim import CALL_LOG_ENV
from modelcert.store import db, repo
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, TestResultRow
from modelcert.store.worker_models import WorkerHeartbeat
from tests.chaos.conftest import REQUIRE_NETNS
from tests.support import netns
from tests.support.chaos_analysis import (
    Pair,
    ProcessLife,
    analyse,
    job_status,
    read_calls,
    running_with_tests,
    tolerant,
)
from tests.support.inprocess import fast_settings
from tests.support.netns import NetnsWorker, Topology
from tests.support.pg_cluster import PgCluster
from tests.support.pg_cluster import unavailable_reason as cluster_unavailable

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("netns"), pytest.mark.timeout(240)]

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
REJOIN_REGION = "eu-north-1"  # served by h2 alone: the work it takes after rejoining
PROVIDER = "netns"
DEPLOYMENTS = 8  # × 3 regions: 24 certifications in the batch
REJOIN_DEPLOYMENTS = 2
HOSTS = ("pg", "h1", "h2", "h3")
CUT, KILLED = "h2", "h3"
DEAD_AFTER_S = 5.0  # the least allowed (2.5 heartbeat intervals)
CONCURRENCY = 3  # certifications in flight per worker
LATENCY_MS = [150, 350]  # 13 calls: about 3 s per certification
QUEUE_POLL_S = 0.2
WORKER_ENV = {
    "MODELCERT_WORKER_DEAD_AFTER_S": str(DEAD_AFTER_S),
    "MODELCERT_RECERTIFY_SCHEDULE": "off",
    "CERTIFICATION_CONCURRENCY": str(CONCURRENCY),
    "MODELCERT_QUEUE_POLL_S": str(QUEUE_POLL_S),
}
INTERRUPTING = ("link_cut", "kill9")
POLL_S = 0.2
MID_RUN_BOUND_S = 20.0
HANDOVER_BOUND_S = 30.0  # lease lapse (dead-after) + a watch (dead-after) + reap periods
REJOIN_BOUND_S = 30.0  # TCP retransmissions back off while the link is down
JOB_BOUND_S = 45.0


def log(message: str) -> None:
    print(f"[netns {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate: Callable[[], bool], bound_s: float, what: str) -> float | None:
    """Seconds it took, or None once `bound_s` passed (the checks at the end say what
    that cost)."""
    began = time.monotonic()
    while time.monotonic() - began < bound_s:
        if tolerant(predicate, False):
            return round(time.monotonic() - began, 2)
        time.sleep(POLL_S)
    log(f"not reached within {bound_s:.0f} s: {what}")
    return None


# -- the hosts ---------------------------------------------------------------------------


@pytest.fixture
def topology() -> Iterator[Topology]:
    """The hosts; deleted at the end whatever happened (and stale ones first)."""
    reason = netns.unavailable_reason() or cluster_unavailable()
    if reason:
        if REQUIRE_NETNS:
            pytest.fail(f"MODELCERT_REQUIRE_NETNS=1 but {reason}")
        pytest.skip(reason)
    for removed in netns.remove_stale():
        log(f"removed a stale {removed}")
    hosts = Topology(HOSTS)
    try:
        hosts.up()
        log(f"hosts {', '.join(f'{h.name} {h.address}' for h in hosts.hosts.values())}")
        yield hosts
    finally:
        problems = hosts.down()
        assert not problems, f"network namespaces not cleaned up: {problems}"


@pytest.fixture
def database(topology: Topology, tmp_path: Path) -> Iterator[str]:
    """A private PostgreSQL cluster on host `pg`, listening on its address; its URL."""
    pg = topology["pg"]
    # Not under pytest's temporary root (tests/support/pg_cluster.py says why).
    base = Path(tempfile.mkdtemp(prefix="modelcert-pgns-"))
    cluster = PgCluster(base, host=pg.address, wrap=pg.exec_prefix())
    try:
        cluster.initdb()
        cluster.start()
        yield cluster.create_database("netns")
    finally:
        try:
            cluster.close()
        finally:
            (tmp_path / "postgres.log").write_text(cluster.log())
            shutil.rmtree(base, ignore_errors=True)


# -- the database ------------------------------------------------------------------------


def make_catalog(factory: sessionmaker[Session]) -> dict[str, int]:
    """The provider and its healthy deployments; their model ids → deployment ids."""
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug=PROVIDER,
            kind="sim",
            regions=[*REGIONS, REJOIN_REGION],
            config={"retry_base_ms": 10},
        )
        for index in range(DEPLOYMENTS):
            repo.add_deployment(
                session,
                provider_slug=PROVIDER,
                provider_model_id=f"m{index:02d}",
                options={"profile": "healthy-fast", "latency_ms": LATENCY_MS},
            )
    with factory() as session:
        return {d.provider_model_id: d.id for d in repo.list_deployments(session)}


def heartbeat(factory: sessionmaker[Session], executor_id: str) -> WorkerHeartbeat | None:
    with factory() as session:
        return session.get(WorkerHeartbeat, executor_id)


def verdicts(factory: sessionmaker[Session], job_id: str) -> dict[int, tuple[Any, ...]]:
    """Every run of the job, as its verdict and tests read now (run id → fields)."""
    with factory() as session:
        tests = dict(
            session.execute(
                select(TestResultRow.run_id, func.count(TestResultRow.id))
                .join(CertificationRun, CertificationRun.id == TestResultRow.run_id)
                .where(CertificationRun.job_id == job_id)
                .group_by(TestResultRow.run_id)
            ).all()
        )
        runs = session.scalars(select(CertificationRun).where(CertificationRun.job_id == job_id))
        return {
            run.id: (
                run.status,
                run.score,
                run.completed_at,
                run.tests_total,
                run.tests_passed,
                tests.get(run.id, 0),
            )
            for run in runs
        }


def run_shape(factory: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    """Per run of the job: each test stored once, as many as the run counts (run and
    skipped); and the
    current certification of its deployment and region pointing at it."""
    with factory() as session:
        runs = session.scalars(
            select(CertificationRun).where(CertificationRun.job_id == job_id)
        ).all()
        duplicated_tests: dict[int, int] = {}
        miscounted: dict[int, tuple[int, int]] = {}
        not_current: list[int] = []
        for run in runs:
            test_ids = session.scalars(
                select(TestResultRow.test_id).where(TestResultRow.run_id == run.id)
            ).all()
            repeats = len(test_ids) - len(set(test_ids))
            if repeats:
                duplicated_tests[run.id] = repeats
            counted = run.tests_total + run.tests_skipped
            if len(test_ids) != counted:
                miscounted[run.id] = (len(test_ids), counted)
            current = session.scalar(
                select(Certification).where(
                    Certification.deployment_id == run.deployment_id,
                    Certification.region == run.region,
                )
            )
            if current is None or current.last_run_id != run.id or current.status != run.status:
                not_current.append(run.id)
        return {
            "runs_with_a_test_twice": duplicated_tests,
            "runs_whose_tests_do_not_add_up": miscounted,
            "runs_not_the_current_certification": not_current,
        }


def fenced(path: Path) -> dict[str, int]:
    """What a worker's log says of executions that lost their workflow (for the report:
    ours log `superseded` before a test or the verdict, DBOS refuses a checkpoint)."""
    counts = {"superseded": 0, "checkpoint_refused": 0}
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if "no longer owned by this execution" in line:
            counts["checkpoint_refused"] += 1
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "superseded":
            counts["superseded"] += 1
    return counts


# -- the test ----------------------------------------------------------------------------


def test_partitioned_and_killed_hosts_lose_nothing_and_run_nothing_twice(
    topology: Topology, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    call_dir = tmp_path / "sim-calls"
    monkeypatch.setenv(CALL_LOG_ENV, str(call_dir))  # the worker processes inherit it
    engine = db.make_engine(database)
    db.upgrade(engine)
    factory = db.make_session_factory(engine)
    model_to_deployment = make_catalog(factory)
    log(f"schema and catalog after {time.monotonic() - began:.1f} s")
    settings = fast_settings(database, queue_polling_interval_s=QUEUE_POLL_S)
    enqueuer = Enqueuer(engine, settings)
    requested: list[Pair] = []
    job_ids: list[str] = []
    faults: list[dict[str, Any]] = []
    lives: dict[int, ProcessLife] = {}
    checks: dict[str, Any] = {}

    def enqueue(targets: list[tuple[str, str]]) -> str:
        result = enqueuer.enqueue(factory, targets, kind=JobKind.MULTIPLE)
        assert result.job_id and not result.refused, result
        requested.extend((result.job_id, q.deployment_id, q.region) for q in result.queued)
        job_ids.append(result.job_id)
        return result.job_id

    def done(job_id: str) -> Callable[[], bool]:
        return lambda: job_status(factory, job_id) == "COMPLETED"

    def fault(kind: str, victim: NetnsWorker) -> dict[str, Any]:
        record = {
            "kind": kind,
            "victim": victim.executor_id,
            "victim_pid": victim.pid,
            "job": main,
            "in_flight_on_victim": running_with_tests(factory, main, victim.executor_id),
            "wall": time.time(),
            "t": time.monotonic(),
        }
        faults.append(record)
        return record

    try:
        with netns.netns_workers(database, tmp_path, **WORKER_ENV) as start:
            workers = {
                name: start(
                    topology[name],
                    name,
                    regions=(*REGIONS, REJOIN_REGION) if name == CUT else REGIONS,
                )
                for name in ("h1", "h2", "h3")
            }
            for worker in workers.values():
                lives[worker.pid] = ProcessLife(worker.executor_id, time.monotonic())
            for worker in workers.values():
                worker.wait_ready()
            checks["workers_ready_after_s"] = round(time.monotonic() - began, 1)
            log(f"workers ready after {checks['workers_ready_after_s']} s")

            main = enqueue(
                [(f"{PROVIDER}/m{i:02d}", r) for i in range(DEPLOYMENTS) for r in REGIONS]
            )
            checks["mid_run_s"] = wait_until(
                lambda: (
                    (
                        running_with_tests(factory, main, CUT) >= 2
                        and running_with_tests(factory, main, KILLED) >= 1
                    )
                    or job_status(factory, main) == "COMPLETED"
                ),
                MID_RUN_BOUND_S,
                f"certifications mid-way on {CUT} and {KILLED}",
            )

            # The faults: h2's cable pulled, h3's worker killed.
            cut = fault("link_cut", workers[CUT])
            topology.cut(CUT)
            time.sleep(0.3)
            kill = fault("kill9", workers[KILLED])
            workers[KILLED].kill()
            lives[workers[KILLED].pid].ended = time.monotonic()
            log(
                f"{CUT} cut off ({cut['in_flight_on_victim']} mid-way), {KILLED} killed "
                f"({kill['in_flight_on_victim']} mid-way)"
            )

            # The reaper (h1) hands the work of both over; h2's link stays down until then.
            notes: dict[str, str | None] = {}

            def handed_over() -> bool:
                for name in (CUT, KILLED):
                    row = heartbeat(factory, name)
                    if row is not None and row.stopped_at is not None:
                        notes[name] = row.note
                return len(notes) == 2

            checks["handed_over_s"] = wait_until(
                handed_over, HANDOVER_BOUND_S, f"the reaper handing over {CUT} and {KILLED}"
            )
            cut["handed_over_after_s"] = checks["handed_over_s"]
            checks["reaper_notes"] = notes
            checks["job_completed_while_cut"] = job_status(factory, main) == "COMPLETED"
            cut_off_row = heartbeat(factory, CUT)
            beats_when_cut_off = cut_off_row.beats if cut_off_row else 0
            topology.restore(CUT)
            cut["down_s"] = round(time.monotonic() - cut["t"], 2)
            restored = time.monotonic()
            log(f"{CUT} link back after {cut['down_s']} s; reaper: {notes}")

            def rejoined() -> bool:
                row = heartbeat(factory, CUT)
                return (
                    row is not None
                    and row.stopped_at is None
                    and row.beats > beats_when_cut_off
                    and workers[CUT].get("/ready")[0] == 200
                )

            checks["rejoined_s"] = wait_until(rejoined, REJOIN_BOUND_S, f"{CUT} rejoining")
            checks["main_job_completed_s"] = wait_until(
                done(main), JOB_BOUND_S, "the batch completing"
            )
            before = verdicts(factory, main)

            # h2 takes work again: a job in the one region only it serves.
            follow_up = enqueue(
                [(f"{PROVIDER}/m{i:02d}", REJOIN_REGION) for i in range(REJOIN_DEPLOYMENTS)]
            )
            checks["follow_up_completed_s"] = wait_until(
                done(follow_up), JOB_BOUND_S, f"the follow-up job on {CUT}"
            )
            checks["cut_worker_idle_s"] = wait_until(
                lambda: workers[CUT].get("/health")[1]["in_flight_count"] == 0,
                JOB_BOUND_S,
                f"{CUT} with nothing in flight",
            )
            after = verdicts(factory, main)
            checks["verdicts_changed_after_completion"] = {
                run_id: [before.get(run_id), after.get(run_id)]
                for run_id in before.keys() | after.keys()
                if before.get(run_id) != after.get(run_id)
            }
            with factory() as session:
                checks["follow_up_runs"] = [
                    (run.executor_id, run.status)
                    for run in session.scalars(
                        select(CertificationRun).where(CertificationRun.job_id == follow_up)
                    )
                ]
            checks.update(run_shape(factory, main))
            checks["cut_worker_running"] = workers[CUT].running()
            checks["cut_worker_fenced"] = fenced(tmp_path / f"{CUT}.log")
            checks["since_link_back_s"] = round(time.monotonic() - restored, 2)
            time.sleep(1.0)  # the last end lines of the call log
            report = {
                "topology": {h.name: h.address for h in topology.hosts.values()},
                **analyse(
                    engine,
                    requested,
                    job_ids,
                    read_calls(call_dir),
                    model_to_deployment,
                    lives,
                    faults,
                    main,  # the battery: as most of the batch's certifications called it
                    interrupting=INTERRUPTING,
                ),
                "checks": checks,
            }
    finally:
        enqueuer.close()
        engine.dispose()

    report["duration_s"] = round(time.monotonic() - began, 1)
    path = tmp_path / "netns-report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    if os.environ.get("MODELCERT_NETNS_REPORT"):  # a copy that outlives pytest's tmp dirs
        Path(os.environ["MODELCERT_NETNS_REPORT"]).write_text(path.read_text())
    print(json.dumps(report, indent=2, default=str))
    print(f"netns report: {path}")

    total = DEPLOYMENTS * len(REGIONS) + REJOIN_DEPLOYMENTS
    failures = []
    if report["requested"] != total:
        failures.append(f"requested {report['requested']} certifications, not {total}")
    for key, what in (
        ("lost", "certifications lost (no finished run)"),
        ("concurrent_executions", "certifications executed in two processes at once"),
        ("orphans", "runs left RUNNING"),
        ("wrong_verdicts", "non-CERTIFIED verdicts on healthy deployments"),
        ("jobs_not_completed", "jobs not COMPLETED"),
        ("tests_paid_twice_beyond_the_kills", "tests paid twice beyond the one in flight"),
    ):
        if report[key]:
            failures.append(f"{report[key]} {what}")
    if report["tests_paid_twice"] > report["in_flight_at_kills"]:
        failures.append(
            f"{report['tests_paid_twice']} tests paid twice, more than the "
            f"{report['in_flight_at_kills']} certifications in flight at the faults"
        )
    if report["runs_per_certification"] != {1: total}:
        failures.append(f"runs per certification {report['runs_per_certification']}, not one")
    for key in (
        "runs_with_a_test_twice",
        "runs_whose_tests_do_not_add_up",
        "runs_not_the_current_certification",
        "verdicts_changed_after_completion",
    ):
        if checks[key]:
            failures.append(f"{key}: {checks[key]}")
    for fault_report in report["faults"]:
        if not fault_report["in_flight"]:
            failures.append(f"{fault_report['kind']} of {fault_report['victim']} hit nothing")
    for name in (CUT, KILLED):
        if not (checks["reaper_notes"].get(name) or "").startswith("silent;"):
            failures.append(f"the reaper did not hand over {name}: {checks['reaper_notes']}")
    if checks["rejoined_s"] is None or not checks["cut_worker_running"]:
        failures.append(f"{CUT} did not rejoin (heartbeat, /ready) after its link came back")
    if Counter(checks["follow_up_runs"]) != {(CUT, "CERTIFIED"): REJOIN_DEPLOYMENTS}:
        failures.append(f"follow-up runs {checks['follow_up_runs']}, not all {CUT} CERTIFIED")
    assert not failures, f"{'; '.join(failures)} (report {path})"
