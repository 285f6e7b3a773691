"""System routes: health (open), who am I (any key), API keys (admin)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from modelcert.api.deps import AdminKey, CurrentKey, SessionDep
from modelcert.api.errors import (
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_S,
    ROLE_ERRORS,
    VIEWER_ERRORS,
    error_responses,
)
from modelcert.store import api_keys
from modelcert.store.api_keys import Role
from modelcert.store.auth_models import ApiKey
from modelcert.store.outage import describe_outage, is_database_unavailable
from modelcert.validation import KeyName

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["system"])


class Health(BaseModel):
    status: str  # ok | unavailable
    database: str  # ok, or the kind of error (never its text, which may name hosts)
    schema_revision: str | None = None


class Unhealthy(Health):
    """Not ready: `detail` says why (the database out of reach, or without a schema)."""

    detail: str


NO_SCHEMA = "database has no schema (its version table cannot be read): run `modelcert db upgrade`"


class Identity(BaseModel):
    name: str
    role: Role


class ApiKeyOut(BaseModel):
    """What may be shown of a key: never its hash, and the plain key is not kept at all."""

    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            name=key.name,
            prefix=key.prefix,
            role=api_keys.key_role(key),
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


@router.get(
    "/health",
    response_model=Health,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Unhealthy}},
)
def health(session: SessionDep) -> Health | JSONResponse:
    """200 when the database answers and has a schema; 503 (with Retry-After and the
    reason) otherwise. No key needed. Checked on every call: an API started while its
    database was down is ready as soon as the database is back."""
    try:
        revision = session.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError as exc:
        if is_database_unavailable(exc):
            log.warning("health check: database unavailable: %s", describe_outage(exc))
            detail = DATABASE_UNAVAILABLE
        else:  # the database answered, without our version table
            log.warning("health check: no schema: %s", type(exc).__name__)
            detail = NO_SCHEMA
        body = Unhealthy(status="unavailable", database=type(exc).__name__, detail=detail)
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content=body.model_dump(),
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return Health(status="ok", database="ok", schema_revision=revision)


@router.get("/whoami", response_model=Identity, responses=error_responses(*VIEWER_ERRORS))
def whoami(key: CurrentKey) -> Identity:
    """The name and role of the key making the request."""
    return Identity(name=key.name, role=api_keys.key_role(key))


@router.get("/keys", response_model=list[ApiKeyOut], responses=error_responses(422, *ROLE_ERRORS))
def list_keys(session: SessionDep, _admin: AdminKey, role: Role | None = None) -> list[ApiKeyOut]:
    """Every API key, revoked ones included; `role` keeps only keys with that role."""
    return [ApiKeyOut.of(key) for key in api_keys.list_api_keys(session, role)]


@router.delete(
    "/keys/{name}",
    response_model=ApiKeyOut,
    responses=error_responses(404, 409, 422, *ROLE_ERRORS),
)
def revoke_key(
    name: Annotated[KeyName, Path()], session: SessionDep, _admin: AdminKey
) -> ApiKeyOut | JSONResponse:
    """Revoke a key for good (a leaked one, say); 404 if there is no key of that name, 409
    if it is the last active admin key (nobody could manage keys any more)."""
    try:
        key = api_keys.revoke_api_key(session, name, keep_last_admin=True)
    except api_keys.LastAdminKeyError as exc:
        session.rollback()
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={"detail": exc.message, "field": "name"},
        )
    session.commit()
    return ApiKeyOut.of(key)
