"""The planted-secret test: providers that echo the credentials they were given, certified
by a real worker (in-process, durable) and by `modelcert certify`; then every place
modelcert keeps or shows text is searched for the secrets: every text column of every
table (DBOS' included, base64 payloads decoded), the API (runs, certifications, job,
SSE, reports in every format), the dashboard's pages, the CLI's output (`certify`,
`jobs show`, `report`) and the logs, at INFO and at DEBUG (with the SDK and HTTP
loggers raised to DEBUG on purpose). On SQLite and PostgreSQL. The secret must appear
in 0 places."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, String, Text, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.api.dashboard.sessions import COOKIE_NAME, start_session
from modelcert.domain import Capabilities, JobKind
from modelcert.jobs.enqueue import Enqueuer
from modelcert.obs.logging import configure_logging
from modelcert.reports import build as reports
from modelcert.reports import formats
from modelcert.secrets import MASK
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import CertificationRun, TestResultRow, utcnow
from tests.support import fake_anthropic, fake_gemini
from tests.support.echo_gateway import EchoGateway
from tests.support.fake_bedrock import Behaviour, FakeBedrock, HttpError
from tests.support.inprocess import FAST_AVAILABILITY_GAP_S, StartWorker

# No known token shape: only the registry of secrets the process read can mask these.
GATEWAY_KEY = "planted-gw-key-Q7xLm2Zt8Rk4Vn"
KEY_VARIABLE = "MODELCERT_TEST_PLANTED_KEY"
AWS_ACCESS_KEY = "ASIAPLANTED7TESTKEY1"
AWS_SECRET = "plantedAwsSecretKey/Q7xLm2Zt8+Rk4Vn"
AWS_TOKEN = "IQoJplantedSessionToken/Q7xLm2Zt8Rk4Vn+AAA=="
ANTHROPIC_KEY = "planted-anthropic-key-Hq73Lx9Vb2"
ANTHROPIC_VARIABLE = "MODELCERT_TEST_PLANTED_ANTHROPIC_KEY"
GEMINI_KEY = "planted-gemini-key-Wm41Qz8Tc6"
GEMINI_VARIABLE = "MODELCERT_TEST_PLANTED_GEMINI_KEY"
VERTEX_TOKEN = "planted-vertex-token-Rk29Ps7Jd3"
VERTEX_VARIABLE = "MODELCERT_TEST_PLANTED_VERTEX_TOKEN"
CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
PAIRS = [
    ("gw/echo-model", "global"),
    (f"bedrock/{CLAUDE}", "us-east-1"),
    ("anthropic/claude-echo", "global"),
    ("gemini/gemini-echo", "global"),
    ("vertex/gemini-echo", "us-central1"),
]
THIRD_PARTY_DEBUG = "botocore=DEBUG,urllib3=DEBUG,httpx=DEBUG,httpcore=DEBUG,openai=DEBUG"


def planted(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return (
        GATEWAY_KEY,
        AWS_ACCESS_KEY,
        AWS_SECRET,
        AWS_TOKEN,
        ANTHROPIC_KEY,
        GEMINI_KEY,
        VERTEX_TOKEN,
        *extra,
    )


def leaks(text: str, secrets: tuple[str, ...]) -> list[str]:
    """Which secrets `text` holds (also URL-encoded, as a signed request would)."""
    found = []
    for secret in secrets:
        forms = {secret, secret.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")}
        if any(form in text for form in forms):
            found.append(secret)
    return found


@pytest.fixture
def planted_env(aws_test_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, GATEWAY_KEY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_TOKEN)
    monkeypatch.setenv(ANTHROPIC_VARIABLE, ANTHROPIC_KEY)
    monkeypatch.setenv(GEMINI_VARIABLE, GEMINI_KEY)
    monkeypatch.setenv(VERTEX_VARIABLE, VERTEX_TOKEN)


@pytest.fixture
def gateway() -> Iterator[EchoGateway]:
    with EchoGateway() as server:
        yield server


@pytest.fixture
def fake(planted_env: None) -> Iterator[FakeBedrock]:
    with FakeBedrock() as server:
        # Refuses the token and echoes it, with the signed Authorization header.
        server.behaviours[CLAUDE] = Behaviour(
            error=HttpError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid",
                echo_headers=("X-Amz-Security-Token", "Authorization"),
            )
        )
        yield server


@pytest.fixture
def anthropic_echo(planted_env: None) -> Iterator[fake_anthropic.FakeAnthropic]:
    with fake_anthropic.FakeAnthropic() as server:
        # Refuses the key and echoes the header that carried it.
        server.behaviours["claude-echo"] = fake_anthropic.Behaviour(
            error=fake_anthropic.HttpError(
                "authentication_error", "invalid x-api-key", echo_headers=("Authorization",)
            )
        )
        yield server


@pytest.fixture
def gemini_echo(planted_env: None) -> Iterator[fake_gemini.FakeGemini]:
    with fake_gemini.FakeGemini() as server:
        # The Gemini API echoes its key header, Vertex the bearer token.
        server.behaviours["gemini-echo"] = fake_gemini.Behaviour(
            error=fake_gemini.HttpError(
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials",
                echo_headers=("x-goog-api-key", "Authorization"),
            )
        )
        yield server


@pytest.fixture
def catalog(
    factory: sessionmaker[Session],
    gateway: EchoGateway,
    fake: FakeBedrock,
    anthropic_echo: fake_anthropic.FakeAnthropic,
    gemini_echo: fake_gemini.FakeGemini,
) -> sessionmaker[Session]:
    with transaction(factory) as session:
        repo.add_provider(
            session,
            slug="gw",
            kind="openai",
            base_url=gateway.base_url,
            config={"api_key_env": KEY_VARIABLE, "timeout": 5},
        )
        repo.add_deployment(session, provider_slug="gw", provider_model_id="echo-model")
        repo.add_provider(
            session,
            slug="bedrock",
            kind="bedrock",
            regions=["us-east-1"],
            config={"endpoint_url": fake.url, "read_timeout": 5},
        )
        repo.add_deployment(
            session,
            provider_slug="bedrock",
            provider_model_id=CLAUDE,
            vendor="Anthropic",
            capabilities=Capabilities(tools=True, json_output=True),
        )
        native = (
            ("anthropic", "anthropic", anthropic_echo.url, ["global"], "claude-echo", {}),
            ("gemini", "gemini", gemini_echo.url, ["global"], "gemini-echo", {}),
            (
                "vertex",
                "gemini",
                gemini_echo.url,
                ["us-central1"],
                "gemini-echo",
                {"vertexai": True, "project": "p", "access_token_env": VERTEX_VARIABLE},
            ),
        )
        keys = {"anthropic": ANTHROPIC_VARIABLE, "gemini": GEMINI_VARIABLE}
        for slug, kind, url, regions, model_id, extra in native:
            config = {"api_key_env": keys[slug]} if slug in keys else {}
            repo.add_provider(
                session,
                slug=slug,
                kind=kind,
                base_url=url,
                regions=regions,
                config={**config, **extra, "timeout": 5},
            )
            repo.add_deployment(session, provider_slug=slug, provider_model_id=model_id)
    return factory


class CapturedLogs:
    """The process's logging, as `configure_logging` sets it up, written to a buffer (plus
    DBOS' own logger, which does not propagate)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self._stderr = sys.stderr
        self._handler = logging.StreamHandler(self.buffer)

    def configure(self, level: str, third_party: str | None = None) -> None:
        sys.stderr = self.buffer
        configure_logging(json_lines=level == "DEBUG", level=level, third_party=third_party)
        dbos = logging.getLogger("dbos")
        if self._handler not in dbos.handlers:
            dbos.addHandler(self._handler)

    def restore(self) -> None:
        sys.stderr = self._stderr
        logging.getLogger("dbos").removeHandler(self._handler)
        configure_logging(json_lines=False, level="WARNING")


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    captured = CapturedLogs()
    try:
        yield captured
    finally:
        captured.restore()


def database_text(engine: Engine) -> Iterator[tuple[str, str]]:
    """(where, text) for every value of every text column of every table, modelcert's and
    DBOS', with base64 payloads (DBOS' serialised step outputs) decoded too."""
    inspector = inspect(engine)
    schemas: list[str | None] = [None]
    if engine.dialect.name == "postgresql":
        schemas += [s for s in inspector.get_schema_names() if s == "dbos"]
    with engine.connect() as connection:
        for schema in schemas:
            metadata = MetaData(schema=schema)
            metadata.reflect(connection)
            for table in metadata.tables.values():
                columns = [
                    c
                    for c in table.columns
                    if isinstance(c.type, String | Text) or "JSON" in type(c.type).__name__
                ]
                if not columns:
                    continue
                for row in connection.execute(select(*columns)):
                    for column, value in zip(columns, row, strict=True):
                        if value is None:
                            continue
                        where = f"{table.fullname}.{column.name}"
                        text = value if isinstance(value, str) else repr(value)
                        yield where, text
                        decoded = _base64_text(text)
                        if decoded:
                            yield f"{where} (base64)", decoded


def _base64_text(text: str) -> str | None:
    if len(text) < 16 or not re.fullmatch(r"[A-Za-z0-9+/=\s]+", text):
        return None
    try:
        return base64.b64decode(text, validate=False).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


def cli(database_url: str, *args: str, level: str) -> str:
    env = {
        **os.environ,
        "MODELCERT_DATABASE_URL": database_url,
        "MODELCERT_AVAILABILITY_GAP_S": str(FAST_AVAILABILITY_GAP_S),
        "MODELCERT_RETRY_BASE_MS": "10",
        "MODELCERT_RETRY_MAX_MS": "100",
        "MODELCERT_LOG_LEVEL": level,
        "MODELCERT_THIRD_PARTY_LOG_LEVELS": THIRD_PARTY_DEBUG,
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "modelcert", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_planted_secrets_appear_nowhere(
    catalog: sessionmaker[Session],
    engine: Engine,
    settings: Settings,
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    gateway: EchoGateway,
    fake: FakeBedrock,
    captured_logs: CapturedLogs,
    database_url: str,
) -> None:
    with transaction(catalog) as session:
        _, viewer_key = api_keys.create_api_key(session, "viewer", Role.viewer)
    secrets = planted((viewer_key,))
    found: dict[str, list[str]] = {}

    def check(where: str, text: str) -> None:
        hits = leaks(text, secrets)
        if hits:
            found.setdefault(where, []).extend(hits)

    # A worker certifies both deployments twice: with logs at INFO, then at DEBUG with the
    # SDK and HTTP loggers raised to DEBUG as well (botocore then logs signed headers).
    worker = None
    jobs: list[str] = []
    for level, third_party in (("INFO", ""), ("DEBUG", THIRD_PARTY_DEBUG)):
        captured_logs.configure(level, third_party)
        if level == "DEBUG":
            # MODELCERT_LOG_LEVEL=DEBUG alone leaves the third-party loggers at WARNING.
            configure_logging(json_lines=True, level="DEBUG", third_party="")
            for name in ("botocore", "urllib3", "httpx", "openai", "dbos", "sqlalchemy"):
                assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
            assert logging.getLogger("modelcert.api").getEffectiveLevel() == logging.DEBUG
            captured_logs.configure(level, third_party)
        if worker is None:
            worker = start_worker(regions=["global", "us-east-1", "us-central1"])
        job = enqueuer.enqueue(catalog, PAIRS, kind=JobKind.MULTIPLE)
        assert job.job_id is not None
        jobs.append(job.job_id)
        worker.drain()
        logging.getLogger("modelcert.test").debug("after the job %s", job.job_id)
        check(f"logs at {level}", captured_logs.buffer.getvalue())
        captured_logs.buffer.seek(0)
        captured_logs.buffer.truncate()

    # The providers did receive the secrets, and their echo was stored, masked.
    assert any(GATEWAY_KEY in presented for presented in gateway.presented)
    with catalog() as session:
        runs = session.scalars(select(CertificationRun)).all()
        assert len(runs) == 2 * len(PAIRS) and all(run.status == "FAILED" for run in runs)
        messages = session.scalars(
            select(TestResultRow.error_message).where(TestResultRow.error_message.is_not(None))
        ).all()
    run_ids = [run.id for run in runs]

    # The API, the dashboard and the reports.
    app = create_app(settings, session_factory=catalog)
    headers = {"Authorization": f"Bearer {viewer_key}"}
    with TestClient(app, follow_redirects=False) as client:
        api = "/api/certification-queue"
        paths = [
            f"{api}/history",
            f"{api}/certifications",
            *(f"{api}/runs/{run_id}" for run_id in run_ids),
            *(f"{api}/jobs/{job_id}" for job_id in jobs),
            *(f"{api}/jobs/{job_id}/events" for job_id in jobs),
            *(f"/api/reports/current?format={fmt}" for fmt in formats.FORMATS),
        ]
        with catalog() as session:
            deployments = [repo.find_deployment(session, ref).id for ref, _ in PAIRS]
        paths += [
            f"{api}/certifications/{d}/{region}"
            for d, (_, region) in zip(deployments, PAIRS, strict=True)
        ]
        for path in paths:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
            check(f"API {path}", response.text)
        with transaction(catalog) as session:
            token = start_session(session, viewer_key)
        assert token is not None
        client.cookies.set(COOKIE_NAME, token)
        pages = [
            "/dashboard/",
            "/dashboard/matrix",
            "/dashboard/jobs",
            *(f"/dashboard/jobs/{job_id}" for job_id in jobs),
            *(f"/dashboard/jobs/{job_id}/events" for job_id in jobs),
            *(f"/dashboard/runs/{run_id}" for run_id in run_ids),
            *(
                f"/dashboard/certifications/{d}/{region}"
                for d, (_, region) in zip(deployments, PAIRS, strict=True)
            ),
        ]
        for page in pages:
            response = client.get(page)
            assert response.status_code == 200, (page, response.text)
            check(f"dashboard {page}", response.text)

    with catalog() as session:
        report = reports.build_report(session, reports.ReportFilters(), utcnow())
    for fmt in formats.FORMATS:
        check(f"report {fmt}", formats.render(report, fmt))
    check("logs of the API and the dashboard, at DEBUG", captured_logs.buffer.getvalue())
    captured_logs.restore()

    # The CLI, each command its own process (so the secrets are registered there anew).
    for ref, region in PAIRS:
        check(
            f"modelcert certify {ref}",
            cli(database_url, "certify", "--deployment", ref, "--region", region, level="DEBUG"),
        )
        check(
            f"modelcert certify --json {ref}",
            cli(
                database_url,
                "certify",
                "--deployment",
                ref,
                "--region",
                region,
                "--json",
                level="INFO",
            ),
        )
    for job_id in jobs:
        check("modelcert jobs show", cli(database_url, "jobs", "show", job_id, level="DEBUG"))
        check(
            "modelcert jobs show --json",
            cli(database_url, "jobs", "show", job_id, "--json", level="INFO"),
        )
    for fmt in formats.FORMATS:
        check(
            f"modelcert report {fmt}", cli(database_url, "report", "--format", fmt, level="DEBUG")
        )

    # Last, the database: every row the runs above wrote, the CLI's included.
    for where, text in database_text(engine):
        check(f"database {where}", text)

    assert found == {}, found
    # ... and not for want of an echo: the providers' messages were stored, masked.
    assert any("Incorrect API key provided: " + MASK in m for m in messages), messages
    assert any("X-Amz-Security-Token: " + MASK in m for m in messages), messages
    assert any("invalid x-api-key; Authorization: Bearer " + MASK in m for m in messages)
    assert any("x-goog-api-key: " + MASK in m for m in messages), messages
    assert any(
        "Authorization: Bearer " + MASK in m and "authentication credentials" in m for m in messages
    )
