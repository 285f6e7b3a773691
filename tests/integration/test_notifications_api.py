"""Subscriptions and the delivery log through the API (the real HTTP stack) and the CLI
(`run_command`, in-process), on SQLite and PostgreSQL: operators write, viewers read;
bad input is a 4xx (API) or one error line and exit 2 (CLI) naming the field; the
target URL and the secret are never in an answer, a listing or the delivery log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.jobs.enqueue import Enqueuer
from modelcert.jobs.notify_events import Notifier
from modelcert.settings import Settings
from modelcert.store import api_keys
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import utcnow
from modelcert.store.notifications import Event
from tests.integration.test_cli_operator import cli, lab
from tests.support.cli_inprocess import Result

__all__ = ["cli", "lab"]  # fixtures, shared with the operator CLI's tests

API = "/api/notifications"
SECRET = "whsec-planted-0123456789abcdef"
URL = "https://hooks.example.com/services/T000/B000/planted-path-token"
Headers = dict[str, str]


def key(factory: sessionmaker[Session], name: str, role: Role) -> Headers:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, name, role)
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def client(settings: Settings, lab: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=lab)) as test_client:
        yield test_client


def webhook(**changes: Any) -> dict[str, Any]:
    return {
        "name": "oncall",
        "events": ["verdict.changed", "job.finished"],
        "targetKind": "webhook",
        "targetUrl": URL,
        "secret": SECRET,
        **changes,
    }


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert "planted-path-token" not in text


def test_operators_subscribe_viewers_read_and_nothing_shows_the_url_or_secret(
    client: TestClient, lab: sessionmaker[Session], enqueuer: Enqueuer
) -> None:
    operator = key(lab, "ops-alice", Role.operator)
    viewer = key(lab, "wallboard", Role.viewer)
    assert client.post(f"{API}/subscriptions", json=webhook(), headers=viewer).status_code == 403
    created = client.post(f"{API}/subscriptions", json=webhook(), headers=operator)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["targetUrl"] == "https://hooks.example.com/***"
    assert body["hasSecret"] is True and "secret" not in body
    assert body["createdBy"] == "ops-alice"
    listed = client.get(f"{API}/subscriptions", headers=viewer)
    assert [s["id"] for s in listed.json()] == [body["id"]]
    with transaction(lab) as session:  # an event: one delivery, queued (no worker here)
        event = Event("job.finished:j-9", "job.finished", utcnow(), {"job_id": "j-9"})
        Notifier(enqueuer.client).emit(session, event)
    log = client.get(f"{API}/deliveries", headers=viewer)
    assert [(d["idempotencyKey"], d["status"], d["attempts"]) for d in log.json()] == [
        ("job.finished:j-9", "queued", 0)
    ]
    for answer in (created, listed, log):
        assert_no_secret(answer.text)
    assert client.delete(f"{API}/subscriptions/{body['id']}", headers=viewer).status_code == 403
    assert client.delete(f"{API}/subscriptions/{body['id']}", headers=operator).status_code == 200
    assert client.get(f"{API}/subscriptions", headers=viewer).json() == []
    assert client.get(f"{API}/deliveries", headers=viewer).json() == []
    missing = client.delete(f"{API}/subscriptions/{body['id']}", headers=operator)
    assert (missing.status_code, missing.json()["field"]) == (404, "id")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"targetUrl": "ftp://example.com/hook"}, "targetUrl"),
        ({"targetUrl": "not a url"}, "targetUrl"),
        ({"events": ["verdict.flipped"]}, "events"),
        ({"events": []}, "events"),
        ({"secret": None}, "secret"),
        ({"secret": "short"}, "secret"),
        ({"targetKind": "pager"}, "targetKind"),
        ({"targetKind": "slack"}, "secret"),  # Slack is not signed: no secret
        ({"degradedFactor": 0.5}, "degradedFactor"),
        ({"expiringWithinH": 0}, "expiringWithinH"),
        ({"deployment": "no-slash"}, "deployment"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_and_never_echoes_the_secret(
    client: TestClient, lab: sessionmaker[Session], changes: dict[str, Any], field: str
) -> None:
    operator = key(lab, "ops", Role.operator)
    answer = client.post(f"{API}/subscriptions", json=webhook(**changes), headers=operator)
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["field"].split(".")[-1] == field
    assert_no_secret(answer.text)


def test_the_cli_adds_lists_and_removes_with_one_line_errors(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    base = ["notify", "add", "--name", "oncall", "--url", URL]
    cli(*base, "--event", "verdict.flipped", "--secret-env", "HOOK_SECRET").one_error(
        "--event", "verdict.flipped"
    )
    cli(*base, "--event", "job.finished").one_error("--secret-env", "HMAC secret")
    cli(*base, "--event", "job.finished", "--secret-env", "UNSET_VAR").one_error("UNSET_VAR")
    cli("notify", "add", "--name", "x", "--url", "hooks.example.com", "--event", "job.finished",
        "--secret-env", "HOOK_SECRET").one_error("--url")  # fmt: skip
    added: Result = cli(*base, "--event", "job.finished", "--secret-env", "HOOK_SECRET")
    assert added.code == 0, added.stderr
    assert "https://hooks.example.com/***" in added.stdout
    listed = cli("notify", "list", "--json")
    [row] = listed.json()
    assert row["events"] == ["job.finished"] and row["hasSecret"] is True
    deliveries = cli("notify", "deliveries", "--json")
    assert deliveries.json() == []
    cli("notify", "deliveries", "--status", "lost").one_error("--status")
    for result in (added, listed, deliveries):
        assert_no_secret(result.stdout + result.stderr)
    assert cli("notify", "remove", str(row["id"])).code == 0
    cli("notify", "remove", str(row["id"])).one_error("no subscription")
    assert json.loads(cli("notify", "list", "--json").stdout) == []


def test_the_dashboard_lists_subscriptions_and_deliveries_masked_behind_a_login(
    settings: Settings, lab: sessionmaker[Session], enqueuer: Enqueuer
) -> None:
    operator = key(lab, "ops", Role.operator)
    plain = key(lab, "wall", Role.viewer)["Authorization"].removeprefix("Bearer ")
    app = create_app(settings, session_factory=lab)
    with TestClient(app, follow_redirects=False) as browser:
        assert browser.get("/dashboard/notifications").status_code == 303  # to the login
        browser.post(f"{API}/subscriptions", json=webhook(), headers=operator)
        with transaction(lab) as session:
            event = Event("job.finished:j-7", "job.finished", utcnow(), {"job_id": "j-7"})
            Notifier(enqueuer.client).emit(session, event)
        assert browser.post("/dashboard/login", data={"api_key": plain}).status_code == 303
        page = browser.get("/dashboard/notifications")
    assert page.status_code == 200
    assert "https://hooks.example.com/***" in page.text
    assert "job.finished:j-7" in page.text and "queued" in page.text
    assert 'href="/dashboard/notifications" class="here"' in page.text
    assert_no_secret(page.text)
