"""FastAPI dependencies, as `Annotated` aliases a route declares in its signature:
`session: SessionDep`, `factory: FactoryDep`, `settings: SettingsDep`,
`enqueuer: EnqueuerDep`, `key: CurrentKey`, `key: OperatorKey`, `key: AdminKey`.
Everything they hand out was put on `app.state` by `create_app`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from modelcert.jobs.enqueue import Enqueuer
from modelcert.settings import Settings
from modelcert.store.api_keys import Role, authenticate, key_role
from modelcert.store.auth_models import ApiKey

log = logging.getLogger(__name__)

# auto_error=False: FastAPI's own error would be a 403 without WWW-Authenticate; a missing
# or malformed header is a 401 here, like a wrong key. It also documents the scheme in /docs.
_bearer = HTTPBearer(auto_error=False, description="An API key: `modelcert apikey create`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, from the factory `create_app` put on `app.state`."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_factory(request: Request) -> sessionmaker[Session]:
    """The session factory of the app: for work that manages its own transactions."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


FactoryDep = Annotated[sessionmaker[Session], Depends(get_factory)]


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_enqueuer(request: Request) -> Enqueuer:
    """The app's one `Enqueuer`, made on first use (its DBOS client connects at once, and an
    API whose database is down must still start and answer its health check)."""
    state = request.app.state
    with state.enqueuer_lock:
        if state.enqueuer is None:
            engine = get_factory(request).kw["bind"]
            state.enqueuer = Enqueuer(engine, get_settings(request))
        enqueuer: Enqueuer = state.enqueuer
    return enqueuer


EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]


def get_current_key(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The API key presented as a bearer token; 401 when missing, unknown or revoked.
    `edges.ApiAuthMiddleware` has checked it already, before the body was read: its key
    is taken as it is."""
    checked: ApiKey | None = getattr(request.state, "api_key", None)
    if checked is not None:
        return checked
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing API key: send the header 'Authorization: Bearer <key>'",
            headers=_CHALLENGE,
        )
    key = authenticate(session, credentials.credentials)
    if key is None:
        # Never log what was presented: it may be a real key pasted in the wrong place.
        log.warning("API request with an invalid or revoked key rejected")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid or revoked API key",
            headers=_CHALLENGE,
        )
    # Committed now, so that last_used_at is kept even if the route itself fails.
    session.commit()
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def require_role(required: Role) -> Callable[[ApiKey], ApiKey]:
    """A dependency: the current key if its role is `required` or higher, else 403."""

    def check_role(key: CurrentKey) -> ApiKey:
        if key_role(key) < required:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=(
                    f"this needs the {required.value} role or higher; "
                    f"API key {key.name!r} has the {key.role} role"
                ),
            )
        return key

    return check_role


OperatorKey = Annotated[ApiKey, Depends(require_role(Role.operator))]
AdminKey = Annotated[ApiKey, Depends(require_role(Role.admin))]
