"""Trends per deployment × region (reports/trends.py, `GET /api/trends`, the matrix's
`GET /api/trends/matrix`, `recent_pairs` behind the `modelcert_deployment_*` series of the
API's /metrics, scraped in test_api_metrics.py) on runs with known latencies stored at
known times (tests/support/trend_seed.py), on SQLite and PostgreSQL. The report functions
take `now`; the API reads the clock, so its runs are seeded relative to it (hours and days
apart: no timing involved)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.errors import UserError
from modelcert.reports import trends
from modelcert.settings import Settings
from modelcert.store import api_keys
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import utcnow
from tests.support.trend_seed import Seeded, seed_trend_runs

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(settings: Settings, factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=factory)) as test_client:
        yield test_client


@pytest.fixture
def viewer(factory: sessionmaker[Session]) -> dict[str, str]:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, "analyst", Role.viewer)
    return {"Authorization": f"Bearer {plain}"}


def test_percentile_interpolates_between_ranks() -> None:
    assert trends.percentile([], 50) is None
    assert trends.percentile([7], 95) == 7
    assert trends.percentile([400, 100, 300, 200], 50) == 250
    assert trends.percentile([100, 200, 300, 400], 95) == 385
    assert trends.percentile([1, 2, 3, 4, 5], 0) == 1
    assert trends.percentile([1, 2, 3, 4, 5], 100) == 5


def test_an_unknown_range_names_the_field() -> None:
    with pytest.raises(UserError) as caught:
        trends.parse_range("1y")
    assert caught.value.field == "range"


def test_every_range_stays_small() -> None:
    for window in trends.RANGES.values():
        assert window.buckets <= 30


@pytest.mark.parametrize(
    ("range_name", "expected"),
    [
        (
            "24h",
            {
                "runs": 1,
                "latencyP50Ms": 250,
                "latencyP95Ms": 385,
                "ttftP50Ms": 25,
                "ttftP95Ms": 38.5,
                "testsPassed": 3,
                "testsFailed": 1,
                "passRate": 75.0,
                "verdicts": {"CERTIFIED": 1},
                "lastStatus": "CERTIFIED",
            },
        ),
        (
            "7d",
            {
                "runs": 2,
                "latencyP50Ms": 350,
                "latencyP95Ms": 1750,
                "ttftP50Ms": 25,
                "ttftP95Ms": 38.5,
                "testsPassed": 4,
                "testsFailed": 2,
                "passRate": 66.67,
                "verdicts": {"CERTIFIED": 1, "FAILED": 1},
                "lastStatus": "CERTIFIED",
            },
        ),
        (
            "90d",
            {
                "runs": 3,
                "latencyP50Ms": 400,
                "latencyP95Ms": 4100,
                "ttftP50Ms": 30,
                "ttftP95Ms": 408,
                "testsPassed": 5,
                "testsFailed": 2,
                "passRate": 71.43,
                "verdicts": {"CERTIFIED": 2, "FAILED": 1},
                "lastStatus": "CERTIFIED",
            },
        ),
    ],
)
def test_known_runs_give_known_percentiles_and_pass_rates(
    factory: sessionmaker[Session], range_name: str, expected: dict[str, object]
) -> None:
    seeded = seed_trend_runs(factory, NOW)
    with factory() as session:
        found = trends.series(session, seeded.deployment_id, "us-east-1", range_name, now=NOW)
    assert found["summary"] == expected
    assert found["deployment"] == "lab/quick" and found["region"] == "us-east-1"
    assert found["until"] == NOW.isoformat()
    window = trends.RANGES[range_name]
    assert found["since"] == (NOW - window.span).isoformat()
    assert len(found["buckets"]) == window.buckets
    assert found["bucketSeconds"] == int(window.bucket.total_seconds())
    # The buckets add up to the summary, and only the buckets with a run have numbers.
    assert sum(b["runs"] for b in found["buckets"]) == expected["runs"]
    assert all(b["latencyP95Ms"] is None for b in found["buckets"] if b["runs"] == 0)


def test_each_run_lands_in_its_bucket(factory: sessionmaker[Session]) -> None:
    seeded = seed_trend_runs(factory, NOW)
    with factory() as session:
        day = trends.series(session, seeded.deployment_id, "us-east-1", "24h", now=NOW)
        week = trends.series(session, seeded.deployment_id, "us-east-1", "7d", now=NOW)
        quarter = trends.series(session, seeded.deployment_id, "us-east-1", "90d", now=NOW)
    # 2 h before now: the 23rd of 24 hourly buckets (index 22).
    assert [i for i, b in enumerate(day["buckets"]) if b["runs"]] == [22]
    assert day["buckets"][22]["start"] == (NOW - timedelta(hours=2)).isoformat()
    assert day["buckets"][22]["latencyP95Ms"] == 385
    # 3 days before now in 6 h buckets from 7 days before: index 16; 2 h before: 27.
    assert [i for i, b in enumerate(week["buckets"]) if b["runs"]] == [16, 27]
    assert week["buckets"][16]["verdicts"] == {"FAILED": 1}
    assert week["buckets"][16]["passRate"] == 50.0
    assert week["buckets"][16]["ttftP50Ms"] is None
    # 60 days before now in 3-day buckets from 90 days before: index 10; the others 29.
    assert [i for i, b in enumerate(quarter["buckets"]) if b["runs"]] == [10, 29]
    assert quarter["buckets"][29]["verdicts"] == {"CERTIFIED": 1, "FAILED": 1}
    assert quarter["buckets"][10]["latencyP50Ms"] == 5000


def test_other_pairs_do_not_mix_in(factory: sessionmaker[Session]) -> None:
    seeded = seed_trend_runs(factory, NOW)
    with factory() as session:
        eu = trends.series(session, seeded.deployment_id, "eu-west-1", "24h", now=NOW)
        other = trends.series(session, seeded.other_deployment_id, "us-east-1", "24h", now=NOW)
        nowhere = trends.series(session, seeded.deployment_id, "ap-south-1", "24h", now=NOW)
    for found in (eu, other):
        assert found["summary"]["runs"] == 1
        assert found["summary"]["latencyP95Ms"] == 9999
        assert found["summary"]["passRate"] == 0.0
    assert nowhere["summary"]["runs"] == 0 and nowhere["summary"]["passRate"] is None


def test_matrix_cells_have_a_pass_rate_per_bucket(factory: sessionmaker[Session]) -> None:
    seeded = seed_trend_runs(factory, NOW)
    with factory() as session:
        found = trends.cell_series(session, "7d", now=NOW)
    cells = found["cells"]
    assert set(cells) == {
        f"{seeded.deployment_id}@us-east-1",
        f"{seeded.deployment_id}@eu-west-1",
        f"{seeded.other_deployment_id}@us-east-1",
    }
    main = cells[f"{seeded.deployment_id}@us-east-1"]
    assert main["runs"] == 2 and main["lastStatus"] == "CERTIFIED"
    assert len(main["passRate"]) == 28
    assert main["passRate"][16] == 50.0 and main["passRate"][27] == 75.0
    assert [r for r in main["passRate"] if r is not None] == [50.0, 75.0]
    assert cells[f"{seeded.other_deployment_id}@us-east-1"]["lastStatus"] == "FAILED"


def test_recent_pairs_have_known_values_most_recent_first(
    factory: sessionmaker[Session],
) -> None:
    seed_trend_runs(factory, NOW)
    with factory() as session:
        found = trends.recent_pairs(session, now=NOW, span=timedelta(hours=24), limit=10)
    assert found.ran == 3 and found.omitted == 0
    # lab/quick in us-east-1 ran 2 h ago, the other two 1 h ago (the tie: by deployment id).
    assert [(p.deployment, p.region) for p in found.pairs] == [
        ("lab/quick", "eu-west-1"),
        ("lab/other", "us-east-1"),
        ("lab/quick", "us-east-1"),
    ]
    quick = found.pairs[2]
    assert quick.runs == 1
    assert (quick.latency_p50_ms, quick.latency_p95_ms) == (250, 385)
    assert quick.pass_ratio == 0.75  # 3 passed of 4 executed (the 24h summary's 75 %)
    for noise in found.pairs[:2]:
        assert noise.runs == 1 and noise.pass_ratio == 0.0
        assert noise.latency_p50_ms == noise.latency_p95_ms == 9999


def test_recent_pairs_over_a_longer_span_count_every_run(factory: sessionmaker[Session]) -> None:
    seed_trend_runs(factory, NOW)
    with factory() as session:
        found = trends.recent_pairs(session, now=NOW, span=timedelta(days=7), limit=10)
    quick = next(p for p in found.pairs if p.region == "us-east-1" and p.deployment == "lab/quick")
    # The 7d summary: 2 runs (the skipped test has no latency and counts for neither).
    assert quick.runs == 2 and quick.latency_p50_ms == 350 and quick.latency_p95_ms == 1750
    assert quick.pass_ratio == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    ("limit", "kept"),
    [
        (2, [("lab/quick", "eu-west-1"), ("lab/other", "us-east-1")]),
        (1, [("lab/quick", "eu-west-1")]),
    ],
)
def test_recent_pairs_keep_the_most_recently_run(
    factory: sessionmaker[Session], limit: int, kept: list[tuple[str, str]]
) -> None:
    seed_trend_runs(factory, NOW)
    with factory() as session:
        found = trends.recent_pairs(session, now=NOW, span=timedelta(hours=24), limit=limit)
    assert [(p.deployment, p.region) for p in found.pairs] == kept
    assert found.ran == 3 and found.omitted == 3 - limit
    # A kept pair's numbers do not depend on what was cut.
    assert all(p.latency_p95_ms == 9999 and p.pass_ratio == 0.0 for p in found.pairs)


def test_recent_pairs_of_an_empty_window(factory: sessionmaker[Session]) -> None:
    seed_trend_runs(factory, NOW)
    with factory() as session:
        found = trends.recent_pairs(
            session, now=NOW - timedelta(days=200), span=timedelta(hours=24), limit=10
        )
        with pytest.raises(ValueError, match="limit"):
            trends.recent_pairs(session, now=NOW, span=timedelta(hours=24), limit=0)
    assert found.pairs == [] and found.ran == 0 and found.omitted == 0


# --- over HTTP --------------------------------------------------------------------------


def _seed_now(factory: sessionmaker[Session]) -> Seeded:
    return seed_trend_runs(factory, utcnow())


def test_api_trend_of_a_deployment_in_a_region(
    client: TestClient, viewer: dict[str, str], factory: sessionmaker[Session]
) -> None:
    seeded = _seed_now(factory)
    answer = client.get(
        "/api/trends",
        params={"deployment": "lab/quick", "region": "us-east-1", "range": "7d"},
        headers=viewer,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["schema"] == "modelcert.trends/1"
    assert body["deploymentId"] == seeded.deployment_id and body["range"] == "7d"
    assert body["summary"]["latencyP95Ms"] == 1750 and body["summary"]["passRate"] == 66.67
    by_id = client.get(
        "/api/trends",
        params={"deployment": str(seeded.deployment_id), "region": "us-east-1"},
        headers=viewer,
    ).json()
    assert by_id["range"] == "7d" and by_id["summary"] == body["summary"]

    matrix = client.get("/api/trends/matrix", params={"range": "24h"}, headers=viewer)
    assert matrix.status_code == 200, matrix.text
    rates = matrix.json()["cells"][f"{seeded.deployment_id}@us-east-1"]["passRate"]
    assert len(rates) == 24 and [r for r in rates if r is not None] == [75.0]


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"deployment": "lab/quick", "region": "us-east-1", "range": "1y"}, 422, "range"),
        ({"deployment": "lab/quick", "region": "us-east-1", "range": ""}, 422, "range"),
        ({"region": "us-east-1"}, 422, "deployment"),
        ({"deployment": "lab/quick"}, 422, "region"),
        ({"deployment": "lab/quick", "region": "us east 1"}, 422, "region"),
        ({"deployment": " lab/quick", "region": "us-east-1"}, 422, "deployment"),
        ({"deployment": "lab/nothing", "region": "us-east-1"}, 404, "deployment"),
        ({"deployment": "99999999999999999999", "region": "us-east-1"}, 404, "deployment"),
    ],
)
def test_api_bad_input_names_the_field(
    client: TestClient,
    viewer: dict[str, str],
    factory: sessionmaker[Session],
    params: dict[str, str],
    status: int,
    field: str,
) -> None:
    _seed_now(factory)
    answer = client.get("/api/trends", params=params, headers=viewer)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field


def test_api_trends_need_a_key(client: TestClient) -> None:
    answer = client.get("/api/trends", params={"deployment": "1", "region": "us-east-1"})
    assert answer.status_code == 401
    assert client.get("/api/trends/matrix", params={"range": "x"}).status_code == 401
