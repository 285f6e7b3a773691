"""Every id, deployment ref, region, date and filter of the API and the dashboard, fed
hostile values (Unicode digits, ids past int4 and int8, NUL and control characters, lone
surrogates' neighbours, out-of-range dates, very long text) and then arbitrary strings and
integers by hypothesis, on SQLite and PostgreSQL: never a 5xx (a server error raises in
the test client, with its traceback, so none goes unseen)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api import edges
from modelcert.api.app import create_app
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction

D = "/dashboard"
Q = "/api/certification-queue"
HOSTILE = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "²",
    "١٢",
    "1²",
    str(2**31),
    str(2**63),
    str(2**64),
    "9" * 400,
    "1e309",
    "nan",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\u0085",
    "\ufeff",
    "é" * 300,
    "0001-01-01",
    "9999-12-31",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00-23:59",
    "99999999w",
    "999999999d",
    "lab/quick",
    "lab/",
    "/",
    "..",
    "%00",
    "us-east-1",
    "'; DROP TABLE jobs; --",
]
NO_CONTROL = st.characters(exclude_categories=["Cs"])  # what an HTTP client can send
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(NO_CONTROL, max_size=50),
    st.integers().map(str),
    st.integers(min_value=2**31 - 3, max_value=2**64).map(str),
    st.dates().map(str),
)


@dataclass
class Surface:
    app: FastAPI
    api: TestClient
    dashboard: TestClient
    csrf: str
    headers: dict[str, str]


Target = Callable[[Surface, str], int]


def _seg(value: str) -> str:
    return quote(value, safe="")


def _api_get(path: str) -> Target:
    return lambda s, v: s.api.get(path.format(v=_seg(v)), headers=s.headers).status_code


def _api_query(path: str, name: str) -> Target:
    return lambda s, v: s.api.get(path, params={name: v}, headers=s.headers).status_code


def _api_delete(path: str) -> Target:
    return lambda s, v: s.api.delete(path.format(v=_seg(v)), headers=s.headers).status_code


def _api_post(path: str, body: Callable[[str], object]) -> Target:
    return lambda s, v: s.api.post(path, json=body(v), headers=s.headers).status_code


def _page(path: str) -> Target:
    return lambda s, v: s.dashboard.get(path.format(v=_seg(v))).status_code


def _page_query(path: str, name: str) -> Target:
    return lambda s, v: s.dashboard.get(path, params={name: v}).status_code


def _action(path: str, field: str | None = None) -> Target:
    def post(s: Surface, v: str) -> int:
        data = {"csrf_token": s.csrf, "priority": "low"}
        if field:
            data[field] = v
        return s.dashboard.post(path.format(v=_seg(v)), data=data).status_code

    return post


TARGETS: dict[str, Target] = {
    "api job": _api_get(Q + "/jobs/{v}"),
    "api job events": _api_get(Q + "/jobs/{v}/events"),
    "api cancel": _api_delete(Q + "/jobs/{v}"),
    "api run": _api_get(Q + "/runs/{v}"),
    "api certification ref": _api_get(Q + "/certifications/{v}/us-east-1"),
    "api certification region": _api_get(Q + "/certifications/1/{v}"),
    "api history modelId": _api_query(Q + "/history", "modelId"),
    "api history region": _api_query(Q + "/history", "region"),
    "api history status": _api_query(Q + "/history", "status"),
    "api history page": _api_query(Q + "/history", "page"),
    "api history pageSize": _api_query(Q + "/history", "pageSize"),
    "api certifications modelId": _api_query(Q + "/certifications", "modelId"),
    "api certifications provider": _api_query(Q + "/certifications", "provider"),
    "api certifications region": _api_query(Q + "/certifications", "region"),
    "api certifications valid": _api_query(Q + "/certifications", "valid"),
    "api certification runs": _api_query(Q + "/certifications/1/us-east-1", "runs"),
    "api report since": _api_query("/api/reports/current", "since"),
    "api report modelId": _api_query("/api/reports/current", "modelId"),
    "api report region": _api_query("/api/reports/current", "region"),
    "api report provider": _api_query("/api/reports/current", "provider"),
    "api report format": _api_query("/api/reports/current", "format"),
    "api keys role": _api_query("/api/keys", "role"),
    "api revoke": _api_delete("/api/keys/{v}"),
    "api certify ref": _api_post(Q + "/certify-model", lambda v: {"modelId": v, "region": "x"}),
    "api certify region": _api_post(
        Q + "/certify-model", lambda v: {"modelId": "lab/quick", "region": v, "delaySeconds": 60}
    ),
    "api certify delay": _api_post(
        Q + "/certify-model",
        lambda v: {"modelId": "lab/slow", "region": "us-east-1", "delaySeconds": v},
    ),
    "api certify-multiple": _api_post(
        Q + "/certify-multiple", lambda v: {"modelIds": [v, "1"], "regions": [v]}
    ),
    "api certify-all region": _api_post(Q + "/certify-all", lambda v: {"regions": [v]}),
    "api certify-all provider": _api_post(Q + "/certify-all", lambda v: {"provider": v}),
    "page certification id": _page(D + "/certifications/{v}/us-east-1"),
    "page certification region": _page(D + "/certifications/1/{v}"),
    "page run": _page(D + "/runs/{v}"),
    "page job": _page(D + "/jobs/{v}"),
    "page job events": _page(D + "/jobs/{v}/events"),
    "page login next": _page_query(D + "/login", "next"),
    **{
        f"page jobs {name}": _page_query(D + "/jobs", name)
        for name in (
            "q",
            "provider",
            "model",
            "region",
            "status",
            "requester",
            "date_from",
            "date_to",
            "page",
        )
    },
    "action cancel": _action(D + "/jobs/{v}/cancel"),
    "action retry": _action(D + "/jobs/{v}/retry"),
    "action priority": _action(D + "/jobs/{v}/priority"),
    "action priority value": _action(D + "/jobs/nope/priority", "priority"),
    "action recertify id": _action(D + "/certifications/{v}/eu-west-1/recertify"),
    "action recertify region": _action(D + "/certifications/1/{v}/recertify"),
    "action pause": _action(D + "/regions/{v}/pause"),
    "action resume": _action(D + "/regions/{v}/resume"),
    "action csrf": lambda s, v: (
        s.dashboard.post(D + "/regions/us-east-1/pause", data={"csrf_token": v}).status_code
    ),
    "login key": lambda s, v: s.api.post(D + "/login", data={"api_key": v}).status_code,
    "login next": lambda s, v: (
        s.api.post(D + "/login", data={"api_key": "x", "next": v}).status_code
    ),
}


@pytest.fixture
def surface(settings: Settings, factory: sessionmaker[Session]) -> Iterator[Surface]:
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        for name in ("quick", "slow"):
            repo.add_deployment(session, provider_slug="lab", provider_model_id=name)
        _, admin = api_keys.create_api_key(session, "fuzz-admin", Role.admin)
        _, operator = api_keys.create_api_key(session, "fuzz-ops", Role.operator)
    app = create_app(settings, session_factory=factory)
    # Thousands of wrong keys on purpose: the limit would turn every answer into a 429.
    app.state.auth_limiter = edges.FailedAuthLimiter(limit=10**9)
    app.state.stream_max_s = 0.2  # a stream of a real job ends at once
    with (
        TestClient(app, follow_redirects=False) as api,
        TestClient(app, follow_redirects=False) as dashboard,
    ):
        dashboard.post(f"{D}/login", data={"api_key": operator})
        found = re.search(r'name="csrf_token" value="([^"]+)"', dashboard.get(f"{D}/").text)
        assert found is not None
        yield Surface(app, api, dashboard, found.group(1), {"Authorization": f"Bearer {admin}"})


def _check(surface: Surface, target: str, value: str) -> None:
    status = TARGETS[target](surface, value)
    assert status < 500, (target, value, status)


def test_hostile_values_everywhere_are_never_a_server_error(surface: Surface) -> None:
    for target in TARGETS:
        for value in HOSTILE:
            _check(surface, target, value)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(sorted(TARGETS)), value=VALUES)
def test_arbitrary_values_everywhere_are_never_a_server_error(
    surface: Surface, target: str, value: str
) -> None:
    _check(surface, target, value)
