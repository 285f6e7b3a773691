"""Cost and prices through the CLI (in-process `run_command`), the HTTP API and the
dashboard, on SQLite and PostgreSQL: `modelcert cost` and `GET /api/cost` show the same
figures, per day and month, by provider and region, for one job; `modelcert price` and
`PUT/DELETE /api/catalog/deployments/{id}/price` set and clear a deployment's own price
(operator role, in the audit log), and `price list` / `GET /api/prices` name each price's
source. Bad input is one `error:` line and exit 2, or a 4xx naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.cost.prices import SEED_SOURCE
from modelcert.domain import CertificationStatus, JobKind
from modelcert.settings import Settings, get_settings
from modelcert.store import repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Certification, CertificationRun, Deployment, Job, utcnow
from tests.support.cli_inprocess import invoke
from tests.support.keys import bearer, new_key

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@pytest.fixture
def spent(factory: sessionmaker[Session]) -> dict[str, Any]:
    """`bedrock` (a seed-priced Claude in two regions), `lab` (sim, no price); runs today
    and yesterday, two of them in one job."""
    now = utcnow()
    with transaction(factory) as session:
        repo.add_provider(
            session, slug="bedrock", kind="bedrock", regions=["us-east-1", "eu-west-1"]
        )
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1"])
        sonnet = repo.add_deployment(session, provider_slug="bedrock", provider_model_id=SONNET)
        quick = repo.add_deployment(session, provider_slug="lab", provider_model_id="quick")
        job = Job(kind=JobKind.MULTIPLE.value, total=2, created_by="test")
        session.add(job)
        session.flush()
        certs: dict[tuple[int, str], Certification] = {}
        for deployment, region, when, cost, job_id in (
            (sonnet, "us-east-1", now - timedelta(days=1), 0.25, None),
            (sonnet, "us-east-1", now, 0.5, job.id),
            (sonnet, "eu-west-1", now, 0.125, job.id),
            (quick, "us-east-1", now, None, None),
        ):
            cert = certs.get((deployment.id, region))
            if cert is None:
                cert = certs[(deployment.id, region)] = Certification(
                    deployment_id=deployment.id, region=region
                )
                session.add(cert)
                session.flush()
            session.add(
                CertificationRun(
                    certification_id=cert.id, deployment_id=deployment.id, region=region,
                    status=CertificationStatus.CERTIFIED.value, started_at=when, cost_usd=cost,
                    job_id=job_id,
                )
            )  # fmt: skip
        return {
            "job": job.id,
            "sonnet": sonnet.id,
            "quick": quick.id,
            "today": f"{now:%Y-%m-%d}",
            "yesterday": f"{now - timedelta(days=1):%Y-%m-%d}",
        }


@pytest.fixture
def cli(
    database_url: str, spent: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELCERT_DATABASE_URL", database_url)

    yield invoke
    get_settings.cache_clear()


@pytest.fixture
def client(
    settings: Settings, factory: sessionmaker[Session], spent: dict[str, Any]
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=factory)) as test_client:
        yield test_client


def _line(lines: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [line for line in lines if all(line[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, lines)
    return found[0]


def test_cost_per_day_and_month_in_the_cli(cli: Any, spent: dict[str, Any]) -> None:
    days = cli("cost", "--json")
    assert days.code == 0, days.stderr
    report = days.json()
    today = _line(report["lines"], period=spent["today"], provider="bedrock", region="us-east-1")
    assert today["costUsd"] == 0.5 and today["runs"] == 1
    unpriced = _line(report["lines"], provider="lab")
    assert unpriced["costUsd"] is None and unpriced["unpricedRuns"] == 0  # no test: no call
    assert _line(report["periods"], period=spent["yesterday"])["costUsd"] == 0.25
    assert report["total"]["costUsd"] == 0.875 and report["total"]["runs"] == 4

    months = cli(
        "cost", "--by", "month", "--provider", "bedrock", "--region", "eu-west-1", "--json"
    )
    assert [(m["provider"], m["region"], m["costUsd"]) for m in months.json()["lines"]] == [
        ("bedrock", "eu-west-1", 0.125)
    ]
    table = cli("cost")
    assert table.code == 0 and "$0.8750" in table.stdout and "bedrock" in table.stdout
    assert "—" in table.stdout  # the sim's cost: unknown, not $0
    later = cli("cost", "--since", "2099-01-01")
    assert later.code == 0 and "no certification run since 2099-01-01" in later.stdout


def test_cost_of_one_job_in_the_cli(cli: Any, spent: dict[str, Any]) -> None:
    answer = cli("cost", "--job", spent["job"][:8], "--json")
    assert answer.code == 0, answer.stderr
    job = answer.json()["job"]
    assert (job["jobId"], job["costUsd"], job["pricedRuns"]) == (spent["job"], 0.625, 2)
    assert sorted(run["costUsd"] for run in job["runs"]) == [0.125, 0.5]
    shown = cli("cost", "--job", spent["job"])
    assert shown.code == 0 and f"job {spent['job'][:8]}: $0.6250 over 2 run(s)" in shown.stdout


def test_cost_refuses_bad_input_in_one_line(cli: Any) -> None:
    cli("cost", "--by", "week").one_error("--by", "day or month")
    cli("cost", "--since", "yesterday").one_error("--since")
    cli("cost", "--since", "2025-10-02", "--until", "2025-10-01").one_error("--until")
    cli("cost", "--job", "zz").one_error("job id")
    cli("cost", "--job", "00000000").one_error("unknown job")
    cli("cost", "--region", "us east").one_error("--region")


def test_price_set_list_and_clear_in_the_cli(cli: Any, spent: dict[str, Any]) -> None:
    listed = {row["deployment"]: row for row in cli("price", "list", "--json").json()}
    assert listed[f"bedrock/{SONNET}"]["source"] == SEED_SOURCE
    assert listed[f"bedrock/{SONNET}"]["inputPerMtok"] == 3.0
    assert listed["lab/quick"]["source"] == "none" and listed["lab/quick"]["inputPerMtok"] is None

    changed = cli(
        "price", "set", "lab/quick", "--input", "0.5", "--output", "1.5", "--per-request", "0.001"
    )
    assert changed.code == 0, changed.stderr
    assert (
        "lab/quick: $0.5 in / $1.5 out per 1M tokens, $0.001 per request (override)"
        in changed.stdout
    )
    only_lab = cli("price", "list", "--provider", "lab", "--json").json()
    assert [(r["deployment"], r["source"], r["perRequest"]) for r in only_lab] == [
        ("lab/quick", "override", 0.001)
    ]
    cli("price", "set", str(spent["sonnet"]), "--input", "2", "--output", "8")
    assert "override" in cli("price", "list").stdout

    cleared = cli("price", "clear", f"bedrock/{SONNET}")
    assert cleared.code == 0 and f"({SEED_SOURCE})" in cleared.stdout
    again = cli("price", "clear", f"bedrock/{SONNET}")
    assert "had no price of its own" in again.stdout
    audit = cli("audit", "--action", "deployment", "--json").json()
    assert [e["action"] for e in audit] == [
        "deployment.price_clear",
        "deployment.price_set",
        "deployment.price_set",
    ]
    assert audit[-1]["details"]["inputPerMtok"] == 0.5 and audit[-1]["interface"] == "cli"


def test_price_refuses_bad_input_in_one_line(cli: Any) -> None:
    cli("price", "set", "lab/quick", "--input", "-1", "--output", "1").one_error("--input")
    cli("price", "set", "lab/quick", "--input", "nan", "--output", "1").one_error("--input")
    cli("price", "set", "lab/quick", "--input", "1", "--output", "inf").one_error("--output")
    cli(
        "price", "set", "lab/quick", "--input", "1", "--output", "1", "--per-request", "-0.1"
    ).one_error("--per-request")
    cli("price", "set", "lab/quick", "--input", "1").one_error("--output")
    cli("price", "set", "lab/nothing", "--input", "1", "--output", "1").one_error(
        "unknown deployment"
    )
    cli("price", "clear", "99999").one_error("unknown deployment")
    cli("price", "list", "--provider", "nobody").one_error("nobody")
    cli(
        "catalog", "add-deployment", "--provider", "lab", "--model-id", "x", "--price-input", "1"
    ).one_error("--price-input and --price-output")


def test_add_deployment_with_its_own_price(cli: Any, factory: sessionmaker[Session]) -> None:
    added = cli(
        "catalog", "add-deployment", "--provider", "lab", "--model-id", "priced",
        "--price-input", "1", "--price-output", "2", "--price-per-request", "0.01",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    with factory() as session:
        deployment = repo.find_deployment(session, "lab/priced")
        assert (
            deployment.cost_input_per_mtok,
            deployment.cost_output_per_mtok,
            deployment.cost_per_request,
        ) == (1.0, 2.0, 0.01)


def test_cost_and_prices_over_http(
    client: TestClient, factory: sessionmaker[Session], spent: dict[str, Any]
) -> None:
    viewer = bearer(new_key(factory, "wallboard", Role.viewer))
    operator = bearer(new_key(factory, "ops-alice", Role.operator))

    answer = client.get("/api/cost", headers=viewer)
    assert answer.status_code == 200, answer.text
    assert answer.json()["total"]["costUsd"] == 0.875
    months = client.get(
        "/api/cost", params={"by": "month", "provider": "bedrock"}, headers=viewer
    ).json()
    assert sum(line["costUsd"] for line in months["periods"]) == pytest.approx(0.875)
    assert months["total"]["costUsd"] == 0.875
    job = client.get(f"/api/cost/jobs/{spent['job']}", headers=viewer).json()
    assert job["total"]["costUsd"] == 0.625 and len(job["runs"]) == 2

    prices = client.get("/api/prices", headers=viewer).json()
    assert prices["seedAsOf"] == SEED_SOURCE.removeprefix("seed:")
    sources = {p["deployment"]: p["source"] for p in prices["prices"]}
    assert sources == {f"bedrock/{SONNET}": SEED_SOURCE, "lab/quick": "none"}

    url = f"/api/catalog/deployments/{spent['quick']}/price"
    body = {"inputPerMtok": 0.5, "outputPerMtok": 1.5}
    assert client.put(url, json=body, headers=viewer).status_code == 403
    put = client.put(url, json=body, headers=operator)
    assert put.status_code == 200, put.text
    assert put.json()["source"] == "override" and put.json()["inputPerMtok"] == 0.5
    with factory() as session:
        deployment = session.get(Deployment, spent["quick"])
        assert deployment is not None and deployment.cost_output_per_mtok == 1.5
    audit = client.get("/api/audit", params={"action": "deployment.price_set"}, headers=viewer)
    assert [e["actor"] for e in audit.json()] == ["ops-alice"]

    deleted = client.delete(url, headers=operator)
    assert deleted.status_code == 200 and deleted.json()["source"] == "none"
    assert deleted.json()["changed"] is True
    assert client.delete(url, headers=operator).json()["changed"] is False


def test_http_errors_name_the_field(
    client: TestClient, factory: sessionmaker[Session], spent: dict[str, Any]
) -> None:
    operator = bearer(new_key(factory, "ops", Role.operator))
    url = f"/api/catalog/deployments/{spent['quick']}/price"

    def field_of(response: Any) -> str:
        document = response.json()
        if "field" in document:
            return str(document["field"])
        return str(document["detail"][0]["loc"][-1])

    negative = client.put(url, json={"inputPerMtok": -1, "outputPerMtok": 1}, headers=operator)
    assert negative.status_code == 422 and field_of(negative) == "inputPerMtok"
    missing = client.put(url, json={"inputPerMtok": 1}, headers=operator)
    assert missing.status_code == 422 and field_of(missing) == "outputPerMtok"
    extra = client.put(
        url, json={"inputPerMtok": 1, "outputPerMtok": 1, "currency": "EUR"}, headers=operator
    )
    assert extra.status_code == 422 and field_of(extra) == "currency"
    unknown = client.put(
        "/api/catalog/deployments/99999/price",
        json={"inputPerMtok": 1, "outputPerMtok": 1},
        headers=operator,
    )
    assert unknown.status_code == 404
    assert client.get("/api/cost", params={"by": "week"}, headers=operator).status_code == 422
    bad_window = client.get(
        "/api/cost", params={"since": "2025-10-02", "until": "2025-10-01"}, headers=operator
    )
    assert bad_window.status_code == 400 and field_of(bad_window) == "until"
    job = client.get("/api/cost/jobs/00000000-0000-0000-0000-000000000000", headers=operator)
    assert job.status_code == 404
    assert (
        client.get("/api/prices", params={"provider": "nobody"}, headers=operator).status_code
        == 404
    )


def test_the_dashboard_cost_page(
    settings: Settings, factory: sessionmaker[Session], spent: dict[str, Any]
) -> None:
    app = create_app(settings, session_factory=factory)
    with TestClient(app, follow_redirects=False) as browser:
        assert browser.get("/dashboard/cost").status_code in (302, 303, 307)
        browser.post("/dashboard/login", data={"api_key": new_key(factory, "eyes", Role.viewer)})
        page = browser.get("/dashboard/cost")
    assert page.status_code == 200
    html = unescape(page.text)
    assert 'href="/dashboard/cost" class="here"' in html
    assert spent["today"] in html and "bedrock" in html and "eu-west-1" in html
    assert 'id="cost-days-total">$0.8750<' in html
    assert SEED_SOURCE in html and "lab/quick" in html
    assert "none" in html
