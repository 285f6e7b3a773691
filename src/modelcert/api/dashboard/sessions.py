"""Dashboard logins: an API key is exchanged once for a server-side session.

The browser keeps only a random session token in an HttpOnly cookie; the database keeps
its SHA-256 (like API keys), the key it belongs to, an expiry and the session's CSRF
token. The raw API key is never stored or sent back. The role is read from the key on
every request, so revoking the key ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from modelcert.store.api_keys import Role, authenticate, key_role
from modelcert.store.auth_models import ApiKey, DashboardSession
from modelcert.store.models import utcnow

COOKIE_NAME = "modelcert_session"
SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Login:
    """Who is looking at the dashboard."""

    key_name: str
    role: Role
    csrf_token: str

    @property
    def can_operate(self) -> bool:
        return self.role >= Role.operator


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(session: Session, presented_key: str) -> str | None:
    """A new session token for a valid key, or None. Expired sessions are swept here."""
    key = authenticate(session, presented_key.strip())
    if key is None:
        return None
    now = utcnow()
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(
        DashboardSession(
            token_hash=_hash(token),
            api_key_id=key.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    return token


def current_login(session: Session, token: str | None) -> Login | None:
    """The login behind a session token: None when unknown, expired or its key revoked."""
    if not token:
        return None
    row = session.execute(
        select(DashboardSession, ApiKey)
        .join(ApiKey, ApiKey.id == DashboardSession.api_key_id)
        .where(DashboardSession.token_hash == _hash(token))
    ).first()
    if row is None:
        return None
    found, key = row
    if found.expires_at <= utcnow() or key.revoked_at is not None:
        return None
    return Login(key_name=key.name, role=key_role(key), csrf_token=found.csrf_token)


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(DashboardSession).where(DashboardSession.token_hash == _hash(token)))
