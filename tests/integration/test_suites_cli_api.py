"""Suites through the CLI (`run_command`, in-process), the API (the real HTTP stack) and
the dashboard, on SQLite and PostgreSQL.

A malformed file is every problem as `file:line: field: message` on stderr and exit 2,
and nothing is loaded from that call, even from its good files; the API answers it with
a 422 listing the problems. Operators load and remove; viewers read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.settings import Settings
from modelcert.store import api_keys
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction
from modelcert.store.models import Suite
from modelcert.suites.loader import parse_suite
from tests.integration.test_cli_operator import cli, lab
from tests.support.cli_inprocess import Result

__all__ = ["cli", "lab"]  # fixtures, shared with the operator CLI's tests

API = "/api/suites"
Headers = dict[str, str]

SUITE = """\
name: support-bot
description: What our support assistant relies on.
attach:
  providers: [lab]
builtin: keep
tests:
  - id: refund-policy
    title: States the refund window
    weight: 2
    required: true
    messages:
      - system: Refunds are accepted within 30 days.
      - user: How many days do I have to ask for a refund?
    assert:
      - {type: contains, value: "30"}
      - type: any-of
        assert: [{type: contains, value: "30"}, {type: icontains, value: thirty}]
  - id: greeting
    prompt: Say hello.
    assert:
      - {type: icontains, value: hello}
  - id: json-answer
    prompt: Answer with a JSON object holding a name.
    response_format: {type: json}
    assert:
      - {type: is-json}
"""

# Three problems, on lines 1, 6 and 7.
MALFORMED = """\
name: Bad_Name
tests:
  - id: one
    prompt: hi
    assert:
      - {type: contains}
      - {type: nope, value: 1}
"""

OTHER = """\
name: latency-budget
attach: {all: true}
builtin: "off"
tests:
  - id: quick
    prompt: Say OK.
    assert:
      - {type: max-latency-ms, value: 5000}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def stored(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        return session.scalar(select(func.count()).select_from(Suite)) or 0


def problems_of(result: Result) -> list[str]:
    """Exit 2, no traceback, and the `file:line: …` lines before the final `error:` one."""
    assert "Traceback" not in result.stdout + result.stderr
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), result.stderr
    return lines[:-1]


# --- CLI ------------------------------------------------------------------------------


def test_cli_loads_lists_shows_and_removes_a_suite(
    cli: Any, lab: sessionmaker[Session], tmp_path: Path
) -> None:
    path = write(tmp_path, "support-bot.yaml", SUITE)
    version = parse_suite(SUITE).version
    loaded = cli("suite", "load", path)
    assert loaded.code == 0, loaded.stderr
    assert loaded.stdout.strip() == f"loaded support-bot@{version} (3 tests)"
    again = cli("suite", "load", path)
    assert again.stdout.strip() == f"unchanged support-bot@{version} (3 tests)"
    assert stored(lab) == 1

    listed = cli("suite", "list", "--json").json()
    assert [(s["name"], s["version"], s["tests"]) for s in listed] == [("support-bot", version, 3)]
    assert listed[0]["attachSummary"] == "providers: lab" and listed[0]["builtin"] == "keep"
    table = cli("suite", "list").stdout
    assert "support-bot" in table and version in table and "providers: lab" in table

    shown = cli("suite", "show", "support-bot")
    assert shown.code == 0, shown.stderr
    assert f"support-bot@{version} (current)" in shown.stdout
    assert "support-bot/refund-polic" in shown.stdout  # the table may wrap the cell
    assert "any-of(contains," in shown.stdout
    detail = cli("suite", "show", f"support-bot@{version[:8]}", "--json").json()
    assert [(t["id"], t["weight"], t["required"]) for t in detail["testList"]] == [
        ("refund-policy", 2, True),
        ("greeting", 1, False),
        ("json-answer", 1, False),
    ]
    assert detail["testList"][0]["assertions"] == ["contains", "any-of(contains, icontains)"]
    assert cli("suite", "show", "support-bot", "--yaml").stdout == SUITE

    # A changed file: a new version, current; the first one kept.
    write(tmp_path, "support-bot.yaml", SUITE.replace("Say hello.", "Say hello!"))
    newer = parse_suite(SUITE.replace("Say hello.", "Say hello!")).version
    assert cli("suite", "load", path).stdout.strip() == f"loaded support-bot@{newer} (3 tests)"
    versions = cli("suite", "versions", "support-bot", "--json").json()
    assert [(v["version"], v["current"]) for v in versions] == [(newer, True), (version, False)]
    assert cli("suite", "show", f"support-bot@{version}", "--json").json()["current"] is False

    removed = cli("suite", "remove", "support-bot")
    assert removed.code == 0 and "removed" in removed.stdout
    assert cli("suite", "list", "--json").json() == []
    assert [s["active"] for s in cli("suite", "list", "--all", "--json").json()] == [False]
    assert stored(lab) == 2  # history kept
    assert cli("suite", "show", "support-bot", "--json").json()["active"] is False
    restored = cli("suite", "load", path)
    assert restored.stdout.strip() == f"restored support-bot@{newer} (3 tests)"

    audited = cli("audit", "--action", "suite", "--json").json()
    assert [e["action"] for e in audited] == [
        "suite.load",
        "suite.remove",
        "suite.load",
        "suite.load",
    ]


def test_cli_a_malformed_file_is_every_problem_with_its_line_and_nothing_is_loaded(
    cli: Any, lab: sessionmaker[Session], tmp_path: Path
) -> None:
    good = write(tmp_path, "support-bot.yaml", SUITE)
    bad = write(tmp_path, "bad.yaml", MALFORMED)
    result = cli("suite", "load", good, bad)
    problems = problems_of(result)
    assert [line.split(": ")[0] for line in problems] == [f"{bad}:1", f"{bad}:6", f"{bad}:7"]
    assert problems[0].startswith(f"{bad}:1: name: ")
    assert problems[1].startswith(f"{bad}:6: tests[0].assert[0].value: ")
    assert "unknown assertion type 'nope'" in problems[2]
    assert "nothing loaded" in result.stderr.splitlines()[-1]
    assert stored(lab) == 0  # the good file neither: all or nothing
    assert result.stdout == ""

    missing = cli("suite", "load", str(tmp_path / "absent.yaml"))
    assert problems_of(missing)[0].startswith(f"{tmp_path / 'absent.yaml'}: ")
    assert problems_of(cli("suite", "validate", bad)) == problems
    assert stored(lab) == 0


def test_cli_refuses_two_files_defining_one_suite_differently(
    cli: Any, lab: sessionmaker[Session], tmp_path: Path
) -> None:
    first = write(tmp_path, "a.yaml", SUITE)
    second = write(tmp_path, "b.yaml", SUITE.replace("Say hello.", "Say hi."))
    problems = problems_of(cli("suite", "load", first, second))
    assert problems == [
        f"{second}: name: suite 'support-bot' is also defined, differently, by {first}"
    ]
    assert stored(lab) == 0


def test_cli_validate_needs_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    path = write(tmp_path, "latency.yaml", OTHER)
    # A database that does not exist: `validate` never opens it.
    monkeypatch.setenv("MODELCERT_DATABASE_URL", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    result = cli("suite", "validate", path)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        f"valid {path}: latency-budget@{parse_suite(OTHER).version} (1 test)"
    )
    schema = cli("suite", "schema")
    assert schema.code == 0
    assert json.loads(schema.stdout)["$schema"].startswith("https://json-schema.org/draft/2020-12")


def test_cli_unknown_suites_are_one_error_line(cli: Any) -> None:
    cli("suite", "show", "nope").one_error("no suite 'nope'")
    cli("suite", "versions", "nope").one_error("no suite 'nope'")
    cli("suite", "remove", "nope").one_error("no suite 'nope'")
    cli("suite", "show", "nope@12").one_error("6 or more hex")


# --- API ------------------------------------------------------------------------------


def key(factory: sessionmaker[Session], name: str, role: Role) -> Headers:
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, name, role)
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def client(settings: Settings, lab: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=lab)) as test_client:
        yield test_client


YAML = {"Content-Type": "application/yaml"}


def test_api_operators_load_and_remove_viewers_read(
    client: TestClient, lab: sessionmaker[Session]
) -> None:
    operator = key(lab, "ops-alice", Role.operator)
    viewer = key(lab, "wallboard", Role.viewer)
    version = parse_suite(SUITE).version
    assert client.post(API, content=SUITE, headers=YAML).status_code == 401
    assert client.post(API, content=SUITE, headers={**YAML, **viewer}).status_code == 403
    created = client.post(API, content=SUITE, headers={**YAML, **operator})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["ref"], body["created"], body["loadedBy"]) == (
        f"support-bot@{version}",
        True,
        "ops-alice",
    )
    again = client.post(API, content=SUITE, headers={"Content-Type": "text/plain", **operator})
    assert again.status_code == 200 and again.json()["created"] is False
    as_json = client.post(
        API,
        json={"source": OTHER, "sourceName": "latency.yaml"},
        headers=operator,
    )
    assert as_json.status_code == 201, as_json.text
    assert as_json.json()["sourceName"] == "latency.yaml"

    listed = client.get(API, headers=viewer).json()
    assert [(s["name"], s["builtin"]) for s in listed] == [
        ("latency-budget", "off"),
        ("support-bot", "keep"),
    ]
    shown = client.get(f"{API}/support-bot", headers=viewer).json()
    assert shown["version"] == version and shown["source"] == SUITE
    assert [t["id"] for t in shown["testList"]] == ["refund-policy", "greeting", "json-answer"]
    assert shown["definition"]["tests"][0]["system"] == "Refunds are accepted within 30 days."
    pinned = client.get(f"{API}/support-bot", params={"version": version[:6]}, headers=viewer)
    assert pinned.status_code == 200 and pinned.json()["version"] == version
    versions = client.get(f"{API}/support-bot/versions", headers=viewer).json()
    assert [v["version"] for v in versions] == [version]
    schema = client.get("/api/suite.schema.json", headers=viewer)
    assert schema.status_code == 200 and schema.json()["title"] == "modelcert test suite"

    assert client.delete(f"{API}/support-bot", headers=viewer).status_code == 403
    removed = client.delete(f"{API}/support-bot", headers=operator)
    assert removed.status_code == 200 and removed.json() == {"name": "support-bot", "removed": True}
    assert [s["name"] for s in client.get(API, headers=viewer).json()] == ["latency-budget"]
    assert client.get(f"{API}/support-bot", headers=viewer).json()["active"] is False
    with_removed = client.get(API, params={"includeRemoved": "true"}, headers=viewer).json()
    assert [s["name"] for s in with_removed] == ["latency-budget", "support-bot"]

    audited = client.get("/api/audit", params={"action": "suite"}, headers=viewer).json()
    assert [(e["action"], e["actor"], e["interface"]) for e in audited] == [
        ("suite.remove", "ops-alice", "api"),
        ("suite.load", "ops-alice", "api"),
        ("suite.load", "ops-alice", "api"),
    ]


def test_api_a_malformed_suite_is_a_422_with_every_problem_and_nothing_stored(
    client: TestClient, lab: sessionmaker[Session]
) -> None:
    operator = key(lab, "ops", Role.operator)
    answer = client.post(API, content=MALFORMED, headers={**YAML, **operator})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert [(p["line"], p["field"]) for p in body["problems"]] == [
        (1, "name"),
        (6, "tests[0].assert[0].value"),
        (7, "tests[0].assert[1]"),
    ]
    assert body["field"] == "name" and body["detail"].startswith("<api>:1: name: ")
    for bad in (
        "name: [unclosed",  # not YAML
        "- a list",  # not a mapping
        "",  # empty
        "name: x\ntests: []\nname: y\n",  # a duplicate key
    ):
        refused = client.post(API, content=bad, headers={**YAML, **operator})
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["problems"], bad
    for payload, field in (
        ({"sourceName": "x.yaml"}, "source"),
        ({"source": SUITE, "extra": 1}, "extra"),
        ({"source": SUITE, "sourceName": 7}, "sourceName"),
    ):
        refused = client.post(API, json=payload, headers=operator)
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == field
    refused = client.post(API, content=b"\xff\xfe", headers={**YAML, **operator})
    assert refused.status_code == 422 and "UTF-8" in refused.json()["detail"]
    wrong_type = client.post(API, content=SUITE, headers={"Content-Type": "image/png", **operator})
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "Content-Type"
    too_big = client.post(API, content="#" * (1024 * 1024 + 1), headers={**YAML, **operator})
    assert too_big.status_code == 413
    assert stored(lab) == 0


def test_api_unknown_suites_are_404_and_bad_names_422(
    client: TestClient, lab: sessionmaker[Session]
) -> None:
    viewer = key(lab, "wall", Role.viewer)
    operator = key(lab, "ops", Role.operator)
    assert client.get(f"{API}/nope", headers=viewer).status_code == 404
    assert client.get(f"{API}/nope/versions", headers=viewer).status_code == 404
    assert client.delete(f"{API}/nope", headers=operator).status_code == 404
    assert client.get(f"{API}/Not_A_Name", headers=viewer).status_code == 422
    client.post(API, content=SUITE, headers={**YAML, **operator})
    missing = client.get(f"{API}/support-bot", params={"version": "000000"}, headers=viewer)
    assert missing.status_code == 404
    short = client.get(f"{API}/support-bot", params={"version": "abc"}, headers=viewer)
    assert short.status_code == 422


# --- dashboard ------------------------------------------------------------------------


def test_the_dashboard_lists_suites_and_shows_one_behind_a_login(
    client: TestClient, lab: sessionmaker[Session]
) -> None:
    operator = key(lab, "ops", Role.operator)
    plain = key(lab, "wall", Role.viewer)["Authorization"].removeprefix("Bearer ")
    version = parse_suite(SUITE).version
    client.post(API, content=SUITE, headers={**YAML, **operator})
    client.post(API, content=SUITE.replace("Say hello.", "Hello?"), headers={**YAML, **operator})
    page = client.get("/dashboard/suites", follow_redirects=False)
    assert page.status_code == 303  # to the login
    login = client.post("/dashboard/login", data={"api_key": plain}, follow_redirects=False)
    assert login.status_code == 303
    listing = client.get("/dashboard/suites")
    assert listing.status_code == 200
    assert 'href="/dashboard/suites" class="here"' in listing.text
    assert 'href="/dashboard/suites/support-bot"' in listing.text
    assert "providers: lab" in listing.text
    detail = client.get("/dashboard/suites/support-bot")
    assert detail.status_code == 200
    assert "support-bot/refund-policy" in detail.text
    assert "any-of(contains, icontains)" in detail.text
    assert f"?version={version}" in detail.text  # the older version, linked
    assert '<pre class="provider-message" id="suite-source">name: support-bot' in detail.text
    older = client.get("/dashboard/suites/support-bot", params={"version": version})
    assert older.status_code == 200 and "An older version" in older.text
    assert client.get("/dashboard/suites/nope").status_code == 404


def test_the_dashboard_escapes_what_a_suite_file_holds(
    client: TestClient, lab: sessionmaker[Session]
) -> None:
    operator = key(lab, "ops", Role.operator)
    plain = key(lab, "wall", Role.viewer)["Authorization"].removeprefix("Bearer ")
    hostile = SUITE.replace("What our support assistant relies on.", "'<script>alert(1)</script>'")
    assert client.post(API, content=hostile, headers={**YAML, **operator}).status_code == 201
    client.post("/dashboard/login", data={"api_key": plain})
    for url in ("/dashboard/suites", "/dashboard/suites/support-bot"):
        text = client.get(url).text
        assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)" in client.get("/dashboard/suites/support-bot").text
