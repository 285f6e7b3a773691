"""Suites stored and versioned (`store.suites`), on SQLite and PostgreSQL: loading the
same file twice stores one version; a changed file is a new version, made current, the
older one kept for the runs that name it; removing keeps every version, inactive; the
reserved names are refused; loads and removals are in the audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from modelcert.errors import NotFoundError, UserError
from modelcert.store import audit
from modelcert.store import suites as store
from modelcert.store.db import transaction
from modelcert.store.models import Suite
from modelcert.suites.loader import LoadedSuite, parse_suite

SUITE = """\
name: support-bot
description: What our support assistant relies on.
attach:
  providers: [lab]
tests:
  - id: refund-policy
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
"""


def suite(text: str = SUITE, name: str = "support-bot.yaml") -> LoadedSuite:
    return parse_suite(text, name)


def changed() -> LoadedSuite:
    return suite(SUITE.replace("Say hello.", "Say hello, please."))


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Suite)) or 0


def test_loading_the_same_suite_twice_stores_one_version(factory: sessionmaker[Session]) -> None:
    loaded = suite()
    with transaction(factory) as session:
        row, created = store.store_suite(session, loaded, loaded_by="alice")
        assert created and row.current and row.active
        assert (row.name, row.version) == ("support-bot", loaded.version)
        assert row.source == SUITE and row.source_name == "support-bot.yaml"
        assert row.definition == loaded.definition and row.loaded_by == "alice"
    with transaction(factory) as session:
        again, created = store.store_suite(session, suite(), loaded_by="bob")
        assert not created
        assert again.loaded_by == "alice"  # the version's first load
        assert count(session) == 1


def test_a_changed_suite_is_a_new_current_version_and_the_old_one_stays(
    factory: sessionmaker[Session],
) -> None:
    first, second = suite(), changed()
    assert first.version != second.version
    with transaction(factory) as session:
        store.store_suite(session, first, loaded_by="alice")
    with transaction(factory) as session:
        row, created = store.store_suite(session, second, loaded_by="alice")
        assert created
    with transaction(factory) as session:
        assert [s.version for s in store.list_suites(session)] == [second.version]
        assert [s.version for s in store.active_suites(session)] == [second.version]
        versions = store.suite_versions(session, "support-bot")
        assert [(v.version, v.current) for v in versions] == [
            (second.version, True),
            (first.version, False),
        ]
        assert store.get_suite(session, "support-bot").version == second.version
        # An older version is still found, by its version or its first 6 characters.
        assert store.get_suite(session, "support-bot", first.version).version == first.version
        assert store.get_suite(session, f"support-bot@{first.version[:6]}").current is False
    with transaction(factory) as session:  # the older file again: current again
        row, created = store.store_suite(session, suite(), loaded_by="bob")
        assert not created and row.current
        assert store.get_suite(session, "support-bot").version == first.version
        assert sum(v.current for v in store.suite_versions(session, "support-bot")) == 1


def test_removing_keeps_every_version_inactive_and_loading_restores(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as session:
        store.store_suite(session, suite(), loaded_by="alice")
        store.store_suite(session, changed(), loaded_by="alice")
    with transaction(factory) as session:
        assert store.remove_suite(session, "support-bot", removed_by="alice", interface="cli") == 2
    with transaction(factory) as session:
        assert store.list_suites(session) == [] and store.active_suites(session) == []
        assert [s.name for s in store.list_suites(session, include_removed=True)] == ["support-bot"]
        assert count(session) == 2  # history: runs name these versions
        with pytest.raises(NotFoundError, match=r"support-bot.*removed"):
            store.get_suite(session, "support-bot")
        assert store.get_suite(session, "support-bot", include_removed=True).active is False
        assert store.get_suite(session, "support-bot", changed().version).active is False
        assert store.remove_suite(session, "support-bot") == 0  # removed already
    with transaction(factory) as session:
        row, created = store.store_suite(session, changed(), loaded_by="alice")
        assert not created and row.active and row.current
        assert [s.version for s in store.active_suites(session)] == [changed().version]


def test_unknown_suites_and_versions_are_not_found_naming_them(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as session:
        store.store_suite(session, suite(), loaded_by=None)
        with pytest.raises(NotFoundError, match="'nope'"):
            store.get_suite(session, "nope")
        with pytest.raises(NotFoundError, match="'nope'"):
            store.suite_versions(session, "nope")
        with pytest.raises(NotFoundError, match="'nope'"):
            store.remove_suite(session, "nope")
        with pytest.raises(NotFoundError, match="support-bot@000000"):
            store.get_suite(session, "support-bot", "000000")
        with pytest.raises(UserError, match="6 or more hex"):
            store.get_suite(session, "support-bot", "9d5")  # too short to mean one
        with pytest.raises(UserError, match="6 or more hex"):
            store.get_suite(session, "support-bot", "%%%%%%")


def test_the_reserved_names_are_refused(factory: sessionmaker[Session]) -> None:
    builtin = suite()
    for name in ("builtin", "smoke"):
        forged = LoadedSuite(
            name=name,
            version=builtin.version,
            description=None,
            definition={**builtin.definition, "name": name},
            source=builtin.source,
            source_name="forged.yaml",
        )
        with transaction(factory) as session, pytest.raises(UserError, match="reserved"):
            store.store_suite(session, forged, loaded_by="alice")
        with pytest.raises(UserError, match="reserved"):  # the loader refuses it first
            parse_suite(SUITE.replace("name: support-bot", f"name: {name}"))
    with transaction(factory) as session:
        assert count(session) == 0


def test_loads_and_removals_are_audited_once(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        store.store_suite(session, suite(), loaded_by="alice", interface="api")
        store.store_suite(session, suite(), loaded_by="alice", interface="api")  # unchanged
        store.store_suite(session, suite(), loaded_by="bob")  # no interface: not audited
        store.remove_suite(session, "support-bot", removed_by="carol", interface="cli")
    with transaction(factory) as session:
        found = [(e.actor, e.interface, e.action, e.target) for e in audit.entries(session)]
    ref = suite().ref
    assert found == [
        ("carol", "cli", "suite.remove", "support-bot"),
        ("alice", "api", "suite.load", ref),
    ]


def test_summary_and_detail_say_what_a_suite_holds(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        row, _ = store.store_suite(session, suite(), loaded_by="alice")
        shown = store.detail(row)
    assert shown["ref"] == suite().ref and shown["tests"] == 2
    assert shown["attachSummary"] == "providers: lab" and shown["builtin"] == "keep"
    assert [(t["id"], t["weight"], t["required"], t["assertions"]) for t in shown["testList"]] == [
        ("refund-policy", 2, True, ["contains", "any-of(contains, icontains)"]),
        ("greeting", 1, False, ["icontains"]),
    ]
    assert shown["source"] == SUITE
