"""`GET /api/reports/current` through the real HTTP stack, on certifications made by the
real service with the sim provider, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.certify.engine import CertificationEngine, CertificationRequest
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Certification, Deployment, utcnow
from modelcert.store.runs import RunStore
from tests.conftest import SavedDatabases

URL = "/api/reports/current"
Headers = dict[str, str]


async def certify_all(
    factory: sessionmaker[Session], settings: Settings, pairs: list[tuple[str, str]]
) -> None:
    engine = CertificationEngine(RunStore(factory), settings)
    try:
        for deployment, region in pairs:
            await engine.certify(CertificationRequest(deployment, region))
    finally:
        await engine.aclose()


# The tests share the certified database (below): in one xdist worker, it is made once.
pytestmark = pytest.mark.xdist_group("api-reports")


@pytest.fixture
async def certified(
    factory: sessionmaker[Session], settings: Settings, saved_databases: SavedDatabases
) -> sessionmaker[Session]:
    """`lab` (sim) in two regions: quick CERTIFIED and denied FAILED in us-east-1, both
    never certified in eu-west-1; `edge/tiny` certified, then expired, in ap-southeast-1.

    Certified once per session and backend; every test gets its own copy of that database
    (`SavedDatabases`)."""
    if not saved_databases.restore("api-reports-certified"):
        await _certify_catalog(factory, settings)
        saved_databases.save("api-reports-certified")
    return factory


async def _certify_catalog(factory: sessionmaker[Session], settings: Settings) -> None:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        repo.add_provider(session, slug="edge", kind="sim", regions=["ap-southeast-1"])
        for slug, name, profile in (
            ("lab", "quick", "healthy-fast"),
            ("lab", "denied", "access-denied"),
            ("edge", "tiny", "healthy-fast"),
        ):
            repo.add_deployment(
                session,
                provider_slug=slug,
                provider_model_id=name,
                options={"profile": profile, "latency_ms": 5},
            )
    await certify_all(
        factory,
        settings,
        [("lab/quick", "us-east-1"), ("lab/denied", "us-east-1"), ("edge/tiny", "ap-southeast-1")],
    )
    with transaction(factory) as session:
        tiny = repo.find_deployment(session, "edge/tiny").id
        session.execute(
            update(Certification)
            .where(Certification.deployment_id == tiny)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )


@pytest.fixture
def client(settings: Settings, certified: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=certified)) as test_client:
        yield test_client


@pytest.fixture
def viewer(certified: sessionmaker[Session]) -> Headers:
    with transaction(certified) as session:
        _, plain = api_keys.create_api_key(session, "ci", Role.viewer)
    return {"Authorization": f"Bearer {plain}"}


def states(body: dict[str, object]) -> dict[tuple[str, str], str]:
    rows = body["certifications"]
    assert isinstance(rows, list)
    return {(row["deployment"], row["region"]): row["state"] for row in rows}


def test_a_key_is_required_and_a_viewer_may_read(client: TestClient, viewer: Headers) -> None:
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers=viewer).status_code == 200


def test_json_report_has_every_pair_and_its_state(client: TestClient, viewer: Headers) -> None:
    response = client.get(URL, headers=viewer)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["schema"] == "modelcert.report/1" and body["simulated"] is True
    assert states(body) == {
        ("edge/tiny", "ap-southeast-1"): "EXPIRED",
        ("lab/denied", "eu-west-1"): "NEVER_CERTIFIED",
        ("lab/denied", "us-east-1"): "FAILED",
        ("lab/quick", "eu-west-1"): "NEVER_CERTIFIED",
        ("lab/quick", "us-east-1"): "CERTIFIED",
    }
    assert body["summary"] == {"total": 5, "valid": 1, "not_valid": 4, "changes": 3}
    denied = next(
        row
        for row in body["certifications"]
        if (row["deployment"], row["region"]) == ("lab/denied", "us-east-1")
    )
    assert denied["error_category"] == "PERMISSION_ERROR" and denied["badge"] == "UNAVAILABLE"
    assert "don't have access" in denied["reason"]
    changes = {(c["deployment"], c["region"]): (c["from"], c["to"]) for c in body["changes"]}
    assert changes == {
        ("lab/quick", "us-east-1"): (None, "CERTIFIED"),
        ("lab/denied", "us-east-1"): (None, "FAILED"),
        ("edge/tiny", "ap-southeast-1"): (None, "CERTIFIED"),
    }


async def test_changes_show_a_certified_deployment_that_failed_later(
    client: TestClient,
    viewer: Headers,
    certified: sessionmaker[Session],
    settings: Settings,
) -> None:
    with transaction(certified) as session:
        quick = session.scalars(select(Deployment).where(Deployment.provider_model_id == "quick"))
        quick.one().options = {"profile": "access-denied"}
    await certify_all(certified, settings, [("lab/quick", "us-east-1")])

    body = client.get(URL, params={"modelId": "lab/quick"}, headers=viewer).json()
    latest = body["changes"][0]
    assert (latest["from"], latest["to"], latest["error_category"]) == (
        "CERTIFIED",
        "FAILED",
        "PERMISSION_ERROR",
    )
    assert states(body)[("lab/quick", "us-east-1")] == "FAILED"
    # The window is honoured: nothing changed in the future.
    later = (utcnow() + timedelta(hours=1)).isoformat()
    assert client.get(URL, params={"since": later}, headers=viewer).json()["changes"] == []


def test_markdown_report(client: TestClient, viewer: Headers) -> None:
    response = client.get(URL, params={"format": "markdown"}, headers=viewer)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    text = response.text
    assert "**SIMULATION**" in text
    # Columns: ap-southeast-1 (not served by lab), eu-west-1, us-east-1.
    row = "| lab/quick (simulated) | – | ❌ NEVER\\_CERTIFIED | ✅ CERTIFIED 5.0 PREMIUM |"
    assert row in text
    assert "lab/denied in us-east-1: FAILED (PERMISSION\\_ERROR, badge UNAVAILABLE)" in text
    assert "2 deployment × region pairs were never certified" in text


def test_junit_report_has_a_failure_per_pair_not_certified(
    client: TestClient, viewer: Headers
) -> None:
    response = client.get(URL, params={"format": "junit"}, headers=viewer)
    assert response.headers["content-type"] == "application/xml"
    root = ET.fromstring(response.content)
    assert (root.get("tests"), root.get("failures")) == ("5", "4")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"lab", "edge"}
    failures = {
        (case.get("classname"), case.get("name")): case.find("failure")
        for case in root.iter("testcase")
    }
    assert failures[("lab/quick", "us-east-1")] is None
    expired = failures[("edge/tiny", "ap-southeast-1")]
    assert expired is not None and expired.get("type") == "EXPIRED"


def test_filters(client: TestClient, viewer: Headers) -> None:
    def pairs(**params: str) -> set[tuple[str, str]]:
        response = client.get(URL, params=params, headers=viewer)
        assert response.status_code == 200, response.text
        return set(states(response.json()))

    assert pairs(provider="edge") == {("edge/tiny", "ap-southeast-1")}
    assert pairs(region="us-east-1") == {("lab/quick", "us-east-1"), ("lab/denied", "us-east-1")}
    assert pairs(modelId="lab/denied", region="eu-west-1") == {("lab/denied", "eu-west-1")}
    # The filters are echoed, so that a stored report says what it covers.
    body = client.get(URL, params={"provider": "lab", "since": "1h"}, headers=viewer).json()
    assert body["filters"] == {"provider": "lab", "region": None, "model": None, "since": "1h"}


@pytest.mark.parametrize(
    ("params", "code", "field", "message"),
    [
        ({"format": "html"}, 422, "format", "format:"),
        ({"since": "yesterday"}, 422, "since", "must be a window"),
        ({"since": "0001-01-01"}, 422, "since", "from 1970 to 8999"),
        ({"since": "99999999w"}, 422, "since", "must be a window"),
        ({"provider": "ghost"}, 404, "provider", "unknown provider 'ghost'"),
        ({"modelId": "ghost"}, 404, "modelId", "unknown deployment 'ghost'"),
        ({"region": "mars-1"}, 404, "region", "unknown region 'mars-1'"),
    ],
)
def test_bad_filters_name_the_field(
    client: TestClient,
    viewer: Headers,
    params: dict[str, str],
    code: int,
    field: str,
    message: str,
) -> None:
    response = client.get(URL, params=params, headers=viewer)
    assert response.status_code == code, response.text
    body = json.loads(response.text)
    assert body["field"] == field and message in body["detail"]
