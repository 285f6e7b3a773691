"""What the dashboard and its read API show, on SQLite and PostgreSQL, for histories
written the way workers write them (`store.runs`: a run begun, each test recorded, the
verdict stored with the job's totals): forms sent as a browser sends them, names of older
jobs, a running job's page, failed cells, throttling, denominators, search, and the job
stream's event ids.

No worker runs here: the runs are stored through the same store functions a worker's
durable steps call, so each test sets up exactly the history it reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api import sse
from modelcert.api.app import create_app
from modelcert.certify.scoring import score_results
from modelcert.domain import ErrorCategory, JobKind, TestOutcome, TestResult
from modelcert.errors import UserError
from modelcert.settings import Settings
from modelcert.store import repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Job, utcnow
from modelcert.store.runs import begin_run, count_job_result, finish_run, record_test
from modelcert.store.worker_models import WorkerHeartbeat
from tests.support.keys import bearer, new_key

D = "/dashboard"
REGIONS = ("us-east-1", "eu-west-1")
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def catalog(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="sim", kind="sim", regions=list(REGIONS))
        for name in ("haze-empty", "fjord-denied", "aurora-fast"):
            repo.add_deployment(
                session, provider_slug="sim", provider_model_id=name, options={"latency_ms": 5}
            )
    return factory


@pytest.fixture
def client(settings: Settings, catalog: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, session_factory=catalog)
    with TestClient(app, follow_redirects=False) as test_client:
        test_client.post(f"{D}/login", data={"api_key": new_key(catalog, "ops", Role.operator)})
        yield test_client


@pytest.fixture
def api_key(catalog: sessionmaker[Session]) -> dict[str, str]:
    return bearer(new_key(catalog, "reader", Role.viewer))


def deployment_id(factory: sessionmaker[Session], name: str) -> int:
    with factory() as session:
        return repo.find_deployment(session, f"sim/{name}").id


def new_job(
    factory: sessionmaker[Session], total: int, by: str = "alice", when: datetime | None = None
) -> str:
    with transaction(factory) as session:
        job = Job(kind=JobKind.MULTIPLE.value, total=total, created_by=by)
        if when is not None:
            job.created_at = when
        session.add(job)
        session.flush()
        return job.id


def passed(test_id: str, latency: float = 120.0, **extra: object) -> TestResult:
    return TestResult(test_id, test_id, TestOutcome.PASSED, latency_ms=latency, **extra)  # type: ignore[arg-type]


def failed(test_id: str, category: ErrorCategory, latency: float | None = 80.0) -> TestResult:
    return TestResult(
        test_id,
        test_id,
        TestOutcome.FAILED,
        latency_ms=latency,
        error_category=category,
        error_message=f"{category.value.lower()} from the provider",
    )


def skipped(test_id: str) -> TestResult:
    return TestResult(test_id, test_id, TestOutcome.SKIPPED, detail="capability not declared")


def store_run(
    factory: sessionmaker[Session],
    job_id: str,
    name: str,
    region: str,
    results: Sequence[TestResult],
    *,
    finish: bool = True,
) -> int:
    """A run as a worker stores it: begun, each test recorded, then (if `finish`) the
    verdict, the current certification and the job's totals in one transaction."""
    dep = deployment_id(factory, name)
    with transaction(factory) as session:
        run = begin_run(session, dep, region, simulated=True, job_id=job_id, executor_id="w1")
        session.execute(
            Job.__table__.update()
            .where(Job.id == job_id, Job.status == "QUEUED")
            .values(status="RUNNING", started_at=run.started_at)
        )
        run_id = run.id
    for position, result in enumerate(results):
        with transaction(factory) as session:
            record_test(session, run_id, position, result)
    if finish:
        score = score_results(results)
        with transaction(factory) as session:
            finish_run(session, run_id, results, score)
            count_job_result(session, job_id, succeeded=score.status.is_valid_verdict)
    return run_id


def text_of(html: str) -> str:
    """The page's text, tags dropped and white space collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


# 1. Forms as a browser sends them


def test_the_jobs_form_sent_as_a_browser_sends_it_never_answers_json(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 1)
    fields = ("q", "provider", "model", "region", "status", "requester", "date_from", "date_to")
    empty = {name: "" for name in fields}
    # Every field present and empty (a browser sends them all), the pager's page too.
    for params in (empty, {**empty, "page": ""}, {**empty, "date_from": "2020-01-01"}):
        page = client.get(f"{D}/jobs", params=params, headers=BROWSER)
        assert page.status_code == 200, (params, page.text[:300])
        assert job[:8] in page.text
    for name in fields:  # each one alone, empty
        assert client.get(f"{D}/jobs", params={name: ""}, headers=BROWSER).status_code == 200
    # A bad value: a page that names the field, not a JSON body.
    bad = client.get(f"{D}/jobs", params={**empty, "date_to": "31/12/2026"}, headers=BROWSER)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("text/html")
    assert 'data-field="date_to"' in bad.text and "to (date)" in text_of(bad.text)
    assert 'id="who"' in bad.text  # still logged in: the navigation is there
    # Clients that do not ask for HTML keep the JSON body naming the field.
    assert client.get(f"{D}/jobs", params={"page": "x"}).json()["field"] == "page"


# 2. Older jobs keep their deployment names


def test_an_older_job_keeps_its_deployment_names_after_a_later_job_recertifies(
    client: TestClient, catalog: sessionmaker[Session], api_key: dict[str, str]
) -> None:
    first = new_job(catalog, 1)
    store_run(catalog, first, "aurora-fast", "us-east-1", [passed("chat")])
    second = new_job(catalog, 1)
    store_run(catalog, second, "aurora-fast", "us-east-1", [passed("chat")])
    for job in (first, second):
        rows = client.get(f"/api/certification-queue/jobs/{job}", headers=api_key).json()
        assert [r["deployment"] for r in rows["certifications"]] == ["sim/aurora-fast"], job
        page = text_of(client.get(f"{D}/jobs/{job}").text)
        assert "sim/aurora-fast" in page


# 3. The job's stream: event ids, and a reconnection that goes on after the last one


def events_of(body: str) -> list[tuple[str | None, dict[str, object]]]:
    """(id, payload) of each event of an SSE body."""
    found = []
    for block in body.split("\n\n"):
        lines = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "data" in lines:
            found.append((lines.get("id"), json.loads(lines["data"])))
    return found


def test_the_job_stream_has_event_ids_and_resumes_after_last_event_id(
    client: TestClient, catalog: sessionmaker[Session], api_key: dict[str, str]
) -> None:
    job = new_job(catalog, 2)
    first = store_run(catalog, job, "aurora-fast", "us-east-1", [passed("a"), passed("b")])
    second = store_run(catalog, job, "aurora-fast", "eu-west-1", [passed("c")], finish=False)
    progress = sse.JobProgress(catalog, job)
    events, summary, _ = progress.poll()
    assert [e["testName"] for e in events] == ["a", "b", "c"] and summary is None
    assert all(e["id"] for e in events) and len({e["id"] for e in events}) == 3
    # A client that got the first two comes back: it gets the third only, counted third.
    resumed = sse.JobProgress(catalog, job, sse.Cursor.parse(str(events[1]["id"])))
    again, _, _ = resumed.poll()
    assert [(e["testName"], e["current"]) for e in again] == [("c", 3)]
    # The second run's next test, written after the first run's rows (ids out of order
    # across runs are why the cursor has one entry per run), is reported once.
    with transaction(catalog) as session:
        record_test(session, second, 1, passed("d"))
    later, _, _ = resumed.poll()
    assert [(e["testName"], e["current"]) for e in later] == [("d", 4)]
    last = str(later[-1]["id"])
    assert f"{first}-{first}" in last or f"{first}:" in last
    with transaction(catalog) as session:
        results = [passed("c"), passed("d")]
        finish_run(session, second, results, score_results(results))
        count_job_result(session, job, succeeded=True)
    # Over HTTP, from the last id: only the completion, which has an id too.
    for path in (f"/api/certification-queue/jobs/{job}/events", f"{D}/jobs/{job}/events"):
        headers = {**(api_key if path.startswith("/api") else {}), "Last-Event-ID": last}
        with client.stream("GET", path, headers=headers) as stream:
            body = "".join(stream.iter_text())
        got = events_of(body)
        assert [payload["type"] for _, payload in got] == ["complete"], (path, got)
        assert got[0][0] and body.startswith("retry: ")
        # From the start, every test once, then the completion.
        start = {k: v for k, v in headers.items() if k != "Last-Event-ID"}
        with client.stream("GET", path, headers=start) as stream:
            everything = events_of("".join(stream.iter_text()))
        assert [p.get("testName") for _, p in everything] == ["a", "b", "c", "d", None]
    # An id that is not ours: 400 naming the header, not a replay.
    refused = client.get(
        f"/api/certification-queue/jobs/{job}/events",
        headers={**api_key, "Last-Event-ID": "12; DROP"},
    )
    assert refused.status_code == 400 and refused.json()["field"] == "Last-Event-ID"


def test_a_running_jobs_page_agrees_with_itself(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 2)
    store_run(catalog, job, "aurora-fast", "us-east-1", [passed("a"), passed("b")])
    store_run(catalog, job, "aurora-fast", "eu-west-1", [passed("a")], finish=False)
    html = client.get(f"{D}/jobs/{job}").text
    header = html.split('id="job-status">')[1].split("</span>")[0]
    assert "RUNNING" in header
    rows = text_of(html.split('id="job-certifications"')[1].split("</table>")[0])
    assert "QUEUED" not in rows and "eu-west-1 RUNNING — 1 done" in rows and "CERTIFIED" in rows
    # One unit for the live counter (tests), the certifications counted beside it.
    progress = text_of(html.split('id="progress-text">')[1].split("</dd>")[0])
    assert re.match(r" 3 / \d+ tests done", progress)
    assert "1/2 certifications finished (1 passed, 0 failed, 1 running)" in progress
    assert "sim/aurora-fast in eu-west-1 started on w1" in text_of(html)
    # The parts the page refreshes while it is shown carry the marker and an id.
    for part in ("job-status", "job-certifications", "timeline", "cert-progress", "per-test"):
        assert re.search(rf'data-live id="{part}"|id="{part}"[^>]*data-live', html), part
    assert 'id="live-stamp" data-refresh="2"' in html


# 5. Failed cells say why


def test_a_failed_matrix_cell_names_its_decisive_category(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 3)
    store_run(
        catalog, job, "fjord-denied", "us-east-1", [failed("a", ErrorCategory.PERMISSION_ERROR)]
    )
    store_run(catalog, job, "haze-empty", "us-east-1", [failed("a", ErrorCategory.QUALITY_ISSUE)])
    store_run(catalog, job, "aurora-fast", "us-east-1", [passed("a")])
    html = client.get(f"{D}/matrix").text

    def cell(name: str) -> str:
        found = html.split(f'data-cell="sim/{name}@us-east-1"')[1].split("</a>")[0]
        return text_of(found)

    assert "FAILED" in cell("fjord-denied") and "PERMISSION_ERROR" in cell("fjord-denied")
    assert "QUALITY_ISSUE" in cell("haze-empty")
    for name in ("fjord-denied", "haze-empty"):
        assert "UNAVAILABLE" not in cell(name) and "0.0★" not in cell(name)
    assert "CERTIFIED" in cell("aurora-fast") and "★" in cell("aurora-fast")
    assert 'id="live-stamp" data-refresh="10"' in html


# 6. Workers that stopped or died stay listed, with when they were last seen


def test_dead_and_stopped_workers_stay_listed_for_an_hour(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    now = utcnow()
    with transaction(catalog) as session:
        for name, seen, stopped, note in (
            ("w-alive", now, None, None),
            ("w-silent", now - timedelta(minutes=5), None, None),
            (
                "w-dead",
                now - timedelta(minutes=10),
                now - timedelta(minutes=9),
                "silent; 2 requeued",
            ),
            ("w-stopped", now - timedelta(minutes=20), now - timedelta(minutes=20), "stopped; 0"),
            ("w-gone", now - timedelta(hours=2), now - timedelta(hours=2), "silent; 1 requeued"),
        ):
            session.add(
                WorkerHeartbeat(
                    executor_id=name, hostname="h", pid=1, heartbeat_at=seen, stopped_at=stopped,
                    note=note, concurrency=4,
                )
            )  # fmt: skip
    html = client.get(f"{D}/").text
    rows = html.split('id="workers"')[1].split("</table>")[0]
    listed = re.findall(r'class="worker-(\w+)" data-worker="([\w-]+)"', rows)
    assert listed == [
        ("alive", "w-alive"),
        ("silent", "w-silent"),
        ("dead", "w-dead"),
        ("stopped", "w-stopped"),
    ]
    dead = text_of(rows.split('data-worker="w-dead"')[1].split("</tr>")[0])
    assert "dead silent; 2 requeued" in dead
    assert re.search(r"\b60\d s ago", dead)  # last seen 10 min before the page


# 7. Throttling counts the tests that waited for rate limits


def test_throttling_counts_tests_that_waited_for_rate_limits(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 1)
    results = [
        passed("a", throttled_s=30.0, retries=3, rate_limited=3),
        passed("b", throttled_s=4.9, retries=1, rate_limited=1),
        passed("c"),
        failed("d", ErrorCategory.RATE_LIMIT),
    ]
    results[-1].rate_limited = 4  # refused four times, the last one for good
    store_run(catalog, job, "aurora-fast", "eu-west-1", results)
    html = client.get(f"{D}/").text
    row = text_of(html.split('id="region-eu-west-1"')[1].split("</tr>")[0])
    assert (
        "34.9 s waited · 8 rate-limited answers (429) · 2 tests throttled (4 retries) · "
        "1 failed on rate limit"
    ) in row
    assert "none" in text_of(html.split('id="region-us-east-1"')[1].split("</tr>")[0])


# 8. Denominators, latency, search by the shown name, jobs completed with failures


def test_a_run_counts_what_ran_and_what_did_not(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 1)
    results = [failed("a", ErrorCategory.QUALITY_ISSUE, latency=80.0)] + [
        skipped(f"s{i}") for i in range(12)
    ]
    run_id = store_run(catalog, job, "haze-empty", "us-east-1", results)
    page = text_of(client.get(f"{D}/runs/{run_id}").text)
    assert "0 passed, 1 failed of 1 run; 12 of the 13 in the battery not run" in page
    assert "of 1" not in page.replace("of 1 run", "")
    # No test passed, one answered: its latency is shown, not "—".
    assert "every test that answered (1): avg 80 ms, max 80 ms" in page
    cert = text_of(
        client.get(f"{D}/certifications/{deployment_id(catalog, 'haze-empty')}/us-east-1").text
    )
    assert "0 passed, 1 failed of 1 run; 12 of the 13" in cert


def test_jobs_are_found_by_the_name_the_dashboard_shows(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    haze = new_job(catalog, 1)
    store_run(catalog, haze, "haze-empty", "us-east-1", [failed("a", ErrorCategory.QUALITY_ISSUE)])
    other = new_job(catalog, 1)
    store_run(catalog, other, "aurora-fast", "us-east-1", [passed("a")])

    def listed(**params: str) -> set[str]:
        html = client.get(f"{D}/jobs", params=params).text
        return set(re.findall(r'href="/dashboard/jobs/([0-9a-f-]{36})"', html))

    for text in ("sim/haze", "haze", "sim/haze-empty", "m/haze-e"):
        assert listed(q=text) == {haze}, text
        assert listed(model=text) == {haze}, text
    assert listed(q="sim/") == {haze, other}
    assert listed(q="sim/aurora-fast/x") == set()


def test_a_job_with_failures_is_not_a_green_completed(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    mixed = new_job(catalog, 2)
    store_run(catalog, mixed, "aurora-fast", "us-east-1", [passed("a")])
    store_run(
        catalog, mixed, "fjord-denied", "us-east-1", [failed("a", ErrorCategory.PERMISSION_ERROR)]
    )
    clean = new_job(catalog, 1)
    store_run(catalog, clean, "aurora-fast", "eu-west-1", [passed("a")])
    page = client.get(f"{D}/jobs/{mixed}").text
    header = page.split('id="job-status">')[1].split("</span>")[0]
    assert "COMPLETED WITH FAILURES" in header and "status-completed_with_failures" in header
    assert "status-completed_with_failures" not in client.get(f"{D}/jobs/{clean}").text
    listing = client.get(f"{D}/jobs").text
    assert listing.count("COMPLETED WITH FAILURES") == 1


# The matrix for a fleet: filters, search, sort (every field may come empty)


def test_the_matrix_filters_searches_and_sorts(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    with transaction(catalog) as session:
        repo.add_provider(session, slug="edge", kind="sim", regions=["ap-south-1"])
        repo.add_deployment(
            session, provider_slug="edge", provider_model_id="tiny", vendor="Acme",
            model_name="Tiny Chat",
        )  # fmt: skip
    job = new_job(catalog, 3)
    store_run(
        catalog, job, "fjord-denied", "us-east-1", [failed("a", ErrorCategory.PERMISSION_ERROR)]
    )
    store_run(
        catalog, job, "fjord-denied", "eu-west-1", [failed("a", ErrorCategory.PERMISSION_ERROR)]
    )
    store_run(catalog, job, "haze-empty", "eu-west-1", [failed("a", ErrorCategory.QUALITY_ISSUE)])
    store_run(catalog, job, "aurora-fast", "us-east-1", [passed("a")])

    def shown(**params: str) -> tuple[list[str], list[str]]:
        page = client.get(f"{D}/matrix", params=params, headers=BROWSER)
        assert page.status_code == 200, (params, page.text[:300])
        table = page.text.split('id="matrix"')[1].split("</table>")[0]
        head = table.split("</thead>")[0]
        rows = re.findall(r'<th class="dep"[^>]*>([^ <]+)', table.split("</thead>")[1])
        return rows, re.findall(r"<th>([a-z0-9-]+)</th>", head)

    everyone = ["edge/tiny", "sim/aurora-fast", "sim/fjord-denied", "sim/haze-empty"]
    empty = {k: "" for k in ("q", "provider", "vendor", "status", "region", "sort")}
    assert shown(**empty) == (everyone, ["ap-south-1", "eu-west-1", "us-east-1"])
    assert shown(provider="edge")[0] == ["edge/tiny"]
    assert shown(vendor="Acme")[0] == ["edge/tiny"]
    assert shown(q="sim/haze")[0] == ["sim/haze-empty"]
    assert shown(q="tiny chat")[0] == ["edge/tiny"]  # the model's name too
    assert shown(status="FAILED")[0] == ["sim/fjord-denied", "sim/haze-empty"]
    assert shown(status="CERTIFIED")[0] == ["sim/aurora-fast"]
    # Never certified somewhere it is served: all but fjord-denied (certified in both).
    assert shown(status="NEVER")[0] == ["edge/tiny", "sim/aurora-fast", "sim/haze-empty"]
    assert shown(region="us-east-1") == (
        ["sim/aurora-fast", "sim/fjord-denied", "sim/haze-empty"],
        ["us-east-1"],
    )
    assert shown(region="us-east-1", status="FAILED")[0] == ["sim/fjord-denied"]
    assert shown(sort="failed")[0][:2] == ["sim/fjord-denied", "sim/haze-empty"]
    assert shown(sort="no-such-order")[0] == everyone  # an unknown order is the default
    page = client.get(f"{D}/matrix", params={"provider": "edge"}).text
    assert "1 of 4 deployments × 3 of 3 regions (filtered)" in text_of(page)
    assert "No deployment matches" in client.get(f"{D}/matrix", params={"q": "zzz"}).text


def test_a_stream_cursor_round_trips_and_a_forged_one_stays_small() -> None:
    cursor = sse.Cursor.of({1, 2, 3, 7, 9, 10}, {3: 40, 11: 55, 12: 60})
    assert cursor.encode() == "v1.1-3,7-7,9-10,11:55,12:60"
    again = sse.Cursor.parse(cursor.encode())
    assert again == cursor and again.covers(2) and not again.covers(8)
    # A range is kept as a range: an id naming two billion runs costs two numbers.
    assert sse.Cursor.parse("v1.1-2000000000").closed == [(1, 2_000_000_000)]
    for forged in (
        "v2.1-2",
        "v1",
        "1-2",
        "v1.3-1",
        "v1.0-4",
        "v1.1:x",
        "v1.-1-2",
        "v1." + "9" * 9000,
    ):
        with pytest.raises(UserError) as refused:
            sse.Cursor.parse(forged)
        assert refused.value.field == "Last-Event-ID", forged


# Run comparison (issue 12, item 4): from a run's page and by URL


def test_two_runs_compared_test_by_test_from_the_run_page_and_by_url(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 4)
    first = store_run(
        catalog, job, "aurora-fast", "us-east-1", [passed("chat", 100.0), passed("json")]
    )
    second = store_run(
        catalog, job, "aurora-fast", "us-east-1",
        [passed("chat", 250.0), failed("json", ErrorCategory.TIMEOUT)],
    )  # fmt: skip
    other_region = store_run(catalog, job, "aurora-fast", "eu-west-1", [passed("chat")])
    other_model = store_run(catalog, job, "haze-empty", "us-east-1", [passed("chat")])

    run_page = client.get(f"{D}/runs/{second}").text
    link = f'href="{D}/runs/compare?a={first}&b={second}" id="compare-previous"'
    assert link in run_page
    assert "nothing earlier to compare" in client.get(f"{D}/runs/{first}").text
    # The link's target: the run before it, same deployment, same region.
    page = client.get(f"{D}/runs/compare", params={"b": second})
    assert page.status_code == 200
    text = text_of(page.text)
    assert f"run #{first}" in text and f"#{second}" in text
    assert "2 test(s) differ" in text  # chat (latency) and json (outcome)
    assert "PASSED → FAILED" in text and "TIMEOUT" in text  # json: outcome and category
    assert "100 ms → 250 ms (+150 ms)" in text  # chat: latency and its delta
    assert 'id="test-json" class="changed"' in page.text
    assert 'id="test-chat"' in page.text and 'id="test-chat" class="changed"' in page.text
    # Each value that differs is shaded, not the whole row: chat differs in latency only.
    chat = page.text.split('id="test-chat"')[1].split("</tr>")[0]
    assert chat.count('class="diff"') == 1 and '<td class="diff">100 ms' in chat
    json_row = page.text.split('id="test-json"')[1].split("</tr>")[0]
    assert json_row.count("diff") >= 3  # outcome, category, message

    # By URL, as the form sends it: the same deployment in another region is comparable.
    across = client.get(f"{D}/runs/compare", params={"a": str(other_region), "b": str(second)})
    assert across.status_code == 200 and "(eu-west-1)" in across.text
    blank_a = client.get(f"{D}/runs/compare", params={"a": "", "b": str(second)})
    assert blank_a.status_code == 200  # an empty field: the run before B
    refused = client.get(f"{D}/runs/compare", params={"a": other_model, "b": second})
    assert refused.status_code == 400 and "compare two runs of one deployment" in refused.text
    assert client.get(f"{D}/runs/compare", params={"b": first}).status_code == 404  # the first
    assert client.get(f"{D}/runs/compare", params={"b": 999_999}).status_code == 404
    assert client.get(f"{D}/runs/compare", params={"b": "x"}).json()["field"] == "b"


# Export (issue 12, item 5): from the dashboard, as its form sends it


def test_run_history_exports_from_the_dashboard_as_csv_and_json(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 3)
    store_run(catalog, job, "aurora-fast", "us-east-1", [passed("chat"), passed("json")])
    store_run(catalog, job, "aurora-fast", "eu-west-1", [passed("chat")])
    store_run(
        catalog, job, "haze-empty", "us-east-1", [failed("chat", ErrorCategory.QUALITY_ISSUE)]
    )
    form = client.get(f"{D}/export")
    assert form.status_code == 200 and 'id="export-form"' in form.text
    sent = {
        "download": "true", "kind": "runs", "format": "csv",
        "date_from": "", "date_to": "", "deployment": "", "region": "",
    }  # fmt: skip
    runs = client.get(f"{D}/export", params=sent)
    assert runs.status_code == 200 and runs.headers["content-type"].startswith("text/csv")
    assert "attachment" in runs.headers["content-disposition"]
    lines = runs.text.strip().splitlines()
    assert len(lines) == 1 + 3 and lines[0].startswith("run_id,")
    today = str(datetime.now(UTC).date())
    tests = client.get(
        f"{D}/export",
        params={**sent, "kind": "tests", "format": "json", "deployment": "sim/aurora-fast",
                "region": "us-east-1", "date_from": today, "date_to": today},
    )  # fmt: skip
    document = tests.json()
    assert [row["test_id"] for row in document["rows"]] == ["chat", "json"]
    assert document["truncated"] is False
    backwards = client.get(
        f"{D}/export", params={**sent, "date_from": today, "date_to": "2020-01-01"}
    )
    assert backwards.status_code == 400 and "end date" in backwards.text
    unknown = client.get(f"{D}/export", params={**sent, "deployment": "sim/nope"})
    assert unknown.status_code == 404
    assert client.get(f"{D}/export", params={**sent, "kind": "all"}).json()["field"] == "kind"


# Trends: the certification page's summary and chart data, the matrix's sparklines


def test_the_certification_page_carries_its_trend_over_the_chosen_range(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    job = new_job(catalog, 2)
    store_run(catalog, job, "aurora-fast", "us-east-1", [passed("a", 100.0), passed("b", 300.0)])
    store_run(
        catalog,
        job,
        "aurora-fast",
        "us-east-1",
        [passed("a", 200.0), failed("b", ErrorCategory.QUALITY_ISSUE, latency=400.0)],
    )
    page = f"{D}/certifications/{deployment_id(catalog, 'aurora-fast')}/us-east-1"
    ranges = [("", 28, "7 days"), ("?range=", 28, "7 days"), ("?range=24h", 24, "24 h")]
    for query, steps, shown in [*ranges, ("?range=90d", 30, "90 days")]:
        html = client.get(page + query, headers=BROWSER)
        assert html.status_code == 200, (query, html.text[:300])
        assert f"over the last {shown}, {steps} steps" in text_of(html.text)
        document = json.loads(
            unescape(html.text.split('id="trend-data">')[1].split("</script>")[0])
        )
        assert len(document["buckets"]) == steps
        summary = document["summary"]
        assert (summary["runs"], summary["passRate"]) == (2, 75.0)
        assert (summary["latencyP50Ms"], summary["latencyP95Ms"]) == (250.0, 385.0)
        assert html.text.count('<li class="v-') == steps
    table = text_of(client.get(page).text.split('id="trend-summary"')[1].split("</table>")[0])
    assert "250 ms" in table and "385 ms" in table and "75 % (3 of 4 tests)" in table
    assert "uplot.min.js" in client.get(page).text
    # A range the page does not offer is an HTML page naming the field, not JSON.
    bad = client.get(page + "?range=1y", headers=BROWSER)
    assert bad.status_code == 422 and "range" in text_of(bad.text)
    assert not bad.headers["content-type"].startswith("application/json")
    # The chart library is served from the package.
    script = client.get(f"{D}/static/uplot.min.js")
    assert script.status_code == 200 and "uPlot" in script.text[:200]
    assert client.get(f"{D}/static/uplot.LICENSE.txt").status_code == 404


def test_the_matrix_draws_a_pass_rate_sparkline_per_cell_that_ran(
    client: TestClient, catalog: sessionmaker[Session]
) -> None:
    assert "<svg" not in client.get(f"{D}/matrix").text  # nothing ran yet (and is cached)
    job = new_job(catalog, 2)
    store_run(catalog, job, "aurora-fast", "us-east-1", [passed("a"), passed("b")])
    store_run(
        catalog, job, "fjord-denied", "us-east-1", [failed("a", ErrorCategory.AUTHENTICATION_ERROR)]
    )
    html = client.get(f"{D}/matrix").text

    def cell(name: str, region: str = "us-east-1") -> str:
        return html.split(f'data-cell="sim/{name}@{region}"')[1].split("</a>")[0]

    assert "<title>pass rate over 7 d: 100 %</title>" in cell("aurora-fast")
    assert "spark-ok" in cell("aurora-fast")
    assert "<title>pass rate over 7 d: 0 %</title>" in cell("fjord-denied")
    assert "spark-bad" in cell("fjord-denied")
    # A run that finishes shows at the next refresh: the cached series are keyed by the
    # runs in the range.
    store_run(
        catalog,
        new_job(catalog, 1),
        "aurora-fast",
        "us-east-1",
        [passed("a"), failed("b", ErrorCategory.QUALITY_ISSUE)],
    )
    html = client.get(f"{D}/matrix").text
    assert "<title>pass rate over 7 d: 75 %</title>" in cell("aurora-fast")
    assert "spark-bad" in cell("aurora-fast")
