"""The FastAPI application factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from modelcert import __version__
from modelcert.api import docs as api_docs
from modelcert.api import edges
from modelcert.api.dashboard import router as dashboard_router
from modelcert.api.errors import install_error_handlers
from modelcert.api.routes import certification, system
from modelcert.api.routes import cost as cost_routes
from modelcert.api.routes import metrics as metrics_routes
from modelcert.api.routes import notifications as notification_routes
from modelcert.api.routes import operator as operator_routes
from modelcert.api.routes import reports as report_routes
from modelcert.api.routes import runs as run_routes
from modelcert.api.routes import suites as suite_routes
from modelcert.api.routes import trends as trend_routes
from modelcert.settings import Settings, get_settings
from modelcert.store import db


def create_app(
    settings: Settings | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> FastAPI:
    """The API on `session_factory`, or on a new engine for `settings.database_url`.

    Add an area by writing `modelcert/api/routes/<area>.py` with a `router` and
    including it below.
    """
    settings = settings or get_settings()
    # An engine made here is closed here, at shutdown; one handed in belongs to the caller.
    own_engine = None
    if session_factory is None:
        own_engine = db.make_engine(settings.database_url)
        session_factory = db.make_session_factory(own_engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # The certification routes make one Enqueuer (a DBOS client) on first use.
        if app.state.enqueuer is not None:
            app.state.enqueuer.close()
            app.state.enqueuer = None
        if own_engine is not None:
            own_engine.dispose()

    app = FastAPI(
        title="modelcert",
        version=__version__,
        description="Certifies AI model deployments per region. Bearer API keys.",
        # /docs from vendored Swagger UI files (api/docs.py), not a CDN; no ReDoc.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.enqueuer = None
    app.state.enqueuer_lock = threading.Lock()  # requests run in a thread pool
    app.state.auth_limiter = edges.FailedAuthLimiter()
    app.state.auth_metrics = edges.AuthMetrics()
    app.state.stream_slots = edges.StreamSlots()
    app.state.stream_max_s = edges.STREAM_MAX_S
    # Outermost last: security headers, the outage 503, the key check, the body limit.
    app.add_middleware(edges.BodyLimitMiddleware)
    app.add_middleware(edges.ApiAuthMiddleware)
    install_error_handlers(app)
    app.add_middleware(edges.SecurityHeadersMiddleware)
    app.include_router(api_docs.router)
    app.include_router(dashboard_router)
    app.include_router(trend_routes.dashboard_router)
    # The API's routes refuse query parameters they do not take (the dashboard's forms
    # and the docs page are for browsers, which add their own).
    strict = [Depends(edges.refuse_unknown_query)]
    for api_router in (
        system.router,
        certification.router,
        report_routes.router,
        metrics_routes.router,
        operator_routes.router,
        notification_routes.router,
        run_routes.router,
        cost_routes.router,
        suite_routes.router,
        trend_routes.router,
    ):
        app.include_router(api_router, dependencies=strict)
    return app
