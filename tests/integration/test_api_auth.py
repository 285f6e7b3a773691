"""API keys through the real HTTP stack (FastAPI app, bearer auth, roles, error handlers)
on SQLite and PostgreSQL, and the api_keys migration going down and up again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.errors import NotFoundError, UserError
from modelcert.settings import Settings
from modelcert.store import api_keys, db
from modelcert.store.api_keys import Role
from modelcert.store.auth_models import ApiKey
from modelcert.store.db import transaction
from modelcert.store.models import Base, utcnow
from tests.support.keys import bearer, new_key


@pytest.fixture
def client(settings: Settings, factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, session_factory=factory)) as test_client:
        yield test_client


def stored(factory: sessionmaker[Session], name: str) -> ApiKey:
    with factory() as session:
        return api_keys.get_api_key(session, name)


def test_a_created_key_authenticates(client: TestClient, factory: sessionmaker[Session]) -> None:
    key = new_key(factory, "ci-bot", Role.operator)
    response = client.get("/api/whoami", headers=bearer(key))
    assert response.status_code == 200
    assert response.json() == {"name": "ci-bot", "role": "operator"}


def test_the_database_holds_no_plain_key(engine: Engine, factory: sessionmaker[Session]) -> None:
    key = new_key(factory, "ci-bot", Role.admin)
    secret_part = key[len(api_keys.KEY_TAG) + 8 :]  # what the stored prefix does not reveal
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    for column, value in rows[0].items():
        assert key not in str(value), column
        assert secret_part not in str(value), column
    assert rows[0]["prefix"] == key[3:11]
    assert rows[0]["key_hash"] == api_keys.hash_key(key)


def test_missing_header_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = client.get("/api/whoami", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["detail"]


def test_a_wrong_key_is_401(client: TestClient, factory: sessionmaker[Session]) -> None:
    key = new_key(factory, "ci-bot", Role.admin)
    # Same prefix, different tail: found by prefix, refused by the hash.
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    for presented in (near_miss, "mc_" + "x" * 43, "not-a-key", key + "x"):
        response = client.get("/api/whoami", headers=bearer(presented))
        assert response.status_code == 401, presented
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "invalid or revoked API key"}


def test_a_revoked_key_is_401(client: TestClient, factory: sessionmaker[Session]) -> None:
    key = new_key(factory, "leaked", Role.admin)
    assert client.get("/api/whoami", headers=bearer(key)).status_code == 200
    with transaction(factory) as session:
        api_keys.revoke_api_key(session, "leaked")
    response = client.get("/api/whoami", headers=bearer(key))
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid or revoked API key"


def test_too_low_a_role_is_403_naming_the_role(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    for name, role in (("viewer-1", Role.viewer), ("operator-1", Role.operator)):
        response = client.get("/api/keys", headers=bearer(new_key(factory, name, role)))
        assert response.status_code == 403
        detail = response.json()["detail"]
        assert "admin role" in detail
        assert f"has the {role.value} role" in detail


def test_admin_lists_keys_without_secrets(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    admin = new_key(factory, "root", Role.admin)
    viewer = new_key(factory, "dashboard", Role.viewer)
    with transaction(factory) as session:
        api_keys.revoke_api_key(session, "dashboard")
    response = client.get("/api/keys", headers=bearer(admin))
    assert response.status_code == 200
    listed = {row["name"]: row for row in response.json()}
    assert set(listed) == {"root", "dashboard"}
    assert listed["dashboard"]["role"] == "viewer"
    assert listed["dashboard"]["prefix"] == viewer[3:11]
    assert listed["dashboard"]["revoked_at"] is not None
    assert listed["root"]["revoked_at"] is None
    assert set(listed["root"]) == {
        "name",
        "prefix",
        "role",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    for secret in (admin, viewer, api_keys.hash_key(admin), api_keys.hash_key(viewer)):
        assert secret not in response.text

    only_viewers = client.get("/api/keys", params={"role": "viewer"}, headers=bearer(admin))
    assert [row["name"] for row in only_viewers.json()] == ["dashboard"]


def test_use_records_last_used_at(client: TestClient, factory: sessionmaker[Session]) -> None:
    key = new_key(factory, "ci-bot", Role.viewer)
    assert stored(factory, "ci-bot").last_used_at is None
    before = utcnow()
    assert client.get("/api/whoami", headers=bearer(key)).status_code == 200
    last_used = stored(factory, "ci-bot").last_used_at
    assert last_used is not None
    assert before <= last_used <= utcnow()

    # Within the resolution another request does not write again; after it, it does.
    assert client.get("/api/whoami", headers=bearer(key)).status_code == 200
    assert stored(factory, "ci-bot").last_used_at == last_used
    with transaction(factory) as session:
        row = api_keys.get_api_key(session, "ci-bot")
        row.last_used_at = last_used - api_keys.LAST_USED_RESOLUTION - timedelta(seconds=1)
    assert client.get("/api/whoami", headers=bearer(key)).status_code == 200
    refreshed = stored(factory, "ci-bot").last_used_at
    assert refreshed is not None and refreshed >= last_used


def test_a_malformed_request_is_422_naming_the_field(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    admin = new_key(factory, "root", Role.admin)
    response = client.get("/api/keys", params={"role": "superuser"}, headers=bearer(admin))
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "role"
    assert body["detail"].startswith("role: ")
    assert "viewer" in body["detail"]
    assert body["errors"][0]["loc"] == ["query", "role"]
    assert "superuser" not in response.text  # the submitted value is not echoed


def test_admin_revokes_a_key_and_unknown_names_are_404(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    admin = new_key(factory, "root", Role.admin)
    leaked = new_key(factory, "leaked", Role.operator)
    response = client.delete("/api/keys/leaked", headers=bearer(admin))
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert client.get("/api/whoami", headers=bearer(leaked)).status_code == 401

    missing = client.delete("/api/keys/nobody", headers=bearer(admin))
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no API key named 'nobody'", "field": "name"}


def test_keys_sharing_a_prefix_are_told_apart_by_hash(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    key = new_key(factory, "first", Role.viewer)
    twin = key[:11] + "t" * (len(key) - 11)  # same prefix, another key
    with transaction(factory) as session:
        session.add(
            ApiKey(name="twin", prefix=key[3:11], key_hash=api_keys.hash_key(twin), role="admin")
        )
    assert client.get("/api/whoami", headers=bearer(key)).json()["name"] == "first"
    assert client.get("/api/whoami", headers=bearer(twin)).json()["name"] == "twin"


def test_bad_input_to_the_service_names_the_field(factory: sessionmaker[Session]) -> None:
    new_key(factory, "taken", Role.viewer)
    cases = [("taken", "viewer", "name"), ("new", "root", "role"), ("bad name", "admin", "name")]
    for name, role, field in cases:
        with pytest.raises(UserError) as raised, transaction(factory) as session:
            api_keys.create_api_key(session, name, role)
        assert raised.value.field == field
    with pytest.raises(NotFoundError), transaction(factory) as session:
        api_keys.revoke_api_key(session, "nobody")


def test_health_is_open_and_reports_the_schema(client: TestClient, engine: Engine) -> None:
    head = ScriptDirectory.from_config(db.alembic_config(engine)).get_current_head()
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "schema_revision": head}


def test_health_is_503_without_a_usable_database(tmp_path: Path, settings: Settings) -> None:
    empty = db.make_session_factory(db.make_engine(f"sqlite:///{tmp_path}/empty.db"))
    unreachable = db.make_session_factory(
        db.make_engine("postgresql://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 2})
    )
    for session_factory in (empty, unreachable):
        with TestClient(create_app(settings, session_factory=session_factory)) as test_client:
            response = test_client.get("/api/health")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"


def test_openapi_documents_bearer_auth(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "modelcert"
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in schema["paths"]["/api/health"]["get"]
    assert schema["paths"]["/api/keys"]["get"]["security"] == [{"HTTPBearer": []}]


def test_roles_are_ordered_and_never_compared_as_strings() -> None:
    assert Role.viewer < Role.operator < Role.admin
    assert max(Role) is Role.admin
    with pytest.raises(TypeError):
        assert Role.viewer < "admin"  # type: ignore[operator]


def test_migration_0002_goes_down_and_up_again(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        db.upgrade(engine)
        # The hand-written migration creates exactly what the model declares.
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert [d for d in diff if "api_keys" in repr(d)] == []

        factory = db.make_session_factory(engine)
        new_key(factory, "before-downgrade", Role.admin)
        db.downgrade(engine, "0001")
        tables = inspect(engine).get_table_names()
        assert "api_keys" not in tables
        assert "certifications" in tables
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0001"

        db.upgrade(engine)
        assert "api_keys" in inspect(engine).get_table_names()
        assert "ix_api_keys_prefix" in {i["name"] for i in inspect(engine).get_indexes("api_keys")}
        new_key(factory, "after-upgrade", Role.viewer)
    finally:
        engine.dispose()
