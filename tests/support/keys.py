"""API keys for tests: issue one in the database, present it as a Bearer header."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from modelcert.store import api_keys
from modelcert.store.api_keys import Role
from modelcert.store.db import transaction


def new_key(factory: sessionmaker[Session], name: str, role: Role) -> str:
    """A new key `name` with `role`; the plain key (shown once, as the CLI does)."""
    with transaction(factory) as session:
        _, plain = api_keys.create_api_key(session, name, role)
    return plain


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
