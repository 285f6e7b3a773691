"""API keys: create, authenticate, revoke, list. No web framework here; the API's
dependencies (`modelcert.api.deps`) and the CLI both call these functions.

A key is `mc_` followed by 32 random bytes (URL-safe base64). Only its first
`KEY_PREFIX_LENGTH` characters after the tag and a SHA-256 hash of the whole key are
stored; the plain key is returned once, by `create_api_key`, and nowhere else.

Functions take a Session and leave the transaction to the caller.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelcert.errors import NotFoundError, UserError
from modelcert.store.auth_models import KEY_PREFIX_LENGTH, ROLE_NAMES, ApiKey
from modelcert.store.models import utcnow

KEY_TAG = "mc_"
KEY_BYTES = 32
# `last_used_at` is rewritten at most this often per key: an exact time is not worth a
# database write (and, on SQLite, the write lock) on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
_PRESENTED = re.compile(r"[A-Za-z0-9_-]{1,200}")


@functools.total_ordering
class Role(enum.Enum):
    """What a key may do. Ordered: each role may do what the roles below it may."""

    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return ROLE_NAMES.index(self.value)

    def __lt__(self, other: object) -> bool:
        # A plain Enum, not a StrEnum: "viewer" > "admin" as strings, and a comparison
        # with a bare string should fail loudly rather than compare alphabetically.
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank < other.rank


def parse_role(value: str) -> Role:
    """The role named by `value` (case-insensitive); `UserError` naming the choices if none."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise UserError(
            f"unknown role {value!r} (known: {', '.join(ROLE_NAMES)})", field="role"
        ) from None


def hash_key(plain: str) -> str:
    """Hex SHA-256 of a whole key.

    A fast hash is enough here, unlike for passwords: a key carries 256 random bits, so
    guessing it from a stolen hash is infeasible however fast each guess is, and slow
    KDFs (bcrypt, scrypt, argon2) would only add latency to every API request.
    """
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def key_prefix(plain: str) -> str | None:
    """The stored lookup prefix of a presented key, or None when it cannot be one of ours."""
    if not plain.startswith(KEY_TAG) or len(plain) <= len(KEY_TAG) + KEY_PREFIX_LENGTH:
        return None
    return plain[len(KEY_TAG) : len(KEY_TAG) + KEY_PREFIX_LENGTH]


def create_api_key(session: Session, name: str, role: Role | str) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plain key, which is not kept anywhere."""
    role = role if isinstance(role, Role) else parse_role(role)
    if not _NAME.fullmatch(name):
        raise UserError(
            f"invalid key name {name!r}: use letters, digits, . _ @ - (at most 100)",
            field="name",
        )
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise UserError(f"an API key named {name!r} already exists", field="name")
    plain = KEY_TAG + secrets.token_urlsafe(KEY_BYTES)
    prefix = key_prefix(plain)
    assert prefix is not None  # token_urlsafe(32) gives 43 characters
    key = ApiKey(name=name, prefix=prefix, key_hash=hash_key(plain), role=role.value)
    session.add(key)
    session.flush()
    return key, plain


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The live (not revoked) key matching `presented`, or None. Records its use."""
    # Ours are ASCII letters, digits, - and _: anything else (a NUL, a non-ASCII byte)
    # cannot match, and must not reach the database either.
    if not _PRESENTED.fullmatch(presented):
        return None
    prefix = key_prefix(presented)
    if prefix is None:
        return None
    presented_hash = hash_key(presented)
    candidates = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).all()
    match = None
    for candidate in candidates:
        # Constant-time comparison, and no early exit: timing says nothing about the hash.
        if hmac.compare_digest(candidate.key_hash, presented_hash):
            match = candidate
    if match is None:
        return None
    now = utcnow()
    if match.last_used_at is None or now - match.last_used_at >= LAST_USED_RESOLUTION:
        match.last_used_at = now
    return match


def get_api_key(session: Session, name: str) -> ApiKey:
    """The key named `name`; `NotFoundError` if there is none."""
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise NotFoundError(f"no API key named {name!r}", field="name")
    return key


class LastAdminKeyError(UserError):
    """Revoking this key would leave no active admin key: nobody could manage keys."""


def revoke_api_key(
    session: Session, name: str, *, now: datetime | None = None, keep_last_admin: bool = False
) -> ApiKey:
    """Revoke the key named `name` for good. Revoking twice keeps the first time.
    With `keep_last_admin` (the API), `LastAdminKeyError` if it is the last active admin
    key: over HTTP nobody could manage keys any more. (The CLI, which reaches the database
    itself and can always create a key, may revoke it: a demo's temporary admin key.)"""
    key = get_api_key(session, name)
    if key.revoked_at is None:
        if keep_last_admin and key.role == Role.admin.value:
            others = session.scalar(
                select(func.count())
                .select_from(ApiKey)
                .where(
                    ApiKey.role == Role.admin.value,
                    ApiKey.revoked_at.is_(None),
                    ApiKey.id != key.id,
                )
            )
            if not others:
                raise LastAdminKeyError(
                    f"API key {name!r} is the last active admin key: create another admin "
                    "key before revoking it",
                    field="name",
                )
        key.revoked_at = now or utcnow()
    return key


def list_api_keys(session: Session, role: Role | None = None) -> Sequence[ApiKey]:
    """Every key (revoked ones included), by name; only those with `role` when given."""
    query = select(ApiKey).order_by(ApiKey.name)
    if role is not None:
        query = query.where(ApiKey.role == role.value)
    return session.scalars(query).all()


def key_role(key: ApiKey) -> Role:
    """The role of a stored key."""
    return Role(key.role)
