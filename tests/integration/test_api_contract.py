"""The API's OpenAPI contract, checked by schemathesis against the app in-process (ASGI) with
an admin key, on SQLite and PostgreSQL: every operation, every schemathesis check (its
default configuration: a 400 or 422 for a request the schema calls valid is a failure, so
is a 2xx for one it calls invalid, an undocumented status or a body off its schema), a
bounded number of examples each, and 0 failures. Before the validated types and the
error schema, 17 of the 18 operations failed on both databases. A small catalog (one sim
provider in two regions, two deployments) gives generated refs something to find."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.settings import Settings
from modelcert.store import api_keys, repo
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction

MAX_EXAMPLES = 10


def seed(factory: sessionmaker[Session]) -> str:
    """A small catalog and an admin key (returned)."""
    with transaction(factory) as session:
        repo.add_provider(session, slug="lab", kind="sim", regions=["us-east-1", "eu-west-1"])
        for name in ("quick", "slow"):
            repo.add_deployment(
                session, provider_slug="lab", provider_model_id=name, options={"latency_ms": 5}
            )
        _, plain = api_keys.create_api_key(session, "contract-admin", Role.admin)
    return plain


class Api:
    def __init__(self, app: FastAPI, key: str) -> None:
        self.app = app
        self.key = key


@pytest.fixture
def api(settings: Settings, factory: sessionmaker[Session]) -> Iterator[Api]:
    key = seed(factory)
    app = create_app(settings, session_factory=factory)
    yield Api(app, key)
    if app.state.enqueuer is not None:
        app.state.enqueuer.close()


@pytest.fixture
def api_schema(api: Api) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_contract(case: Case, api: Api) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {api.key}"})
