"""Errors as JSON a client can act on: the message, and the field it is about; and 503
with Retry-After, not a 500, while the database is out of reach."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelcert.api.schemas import ErrorResponse, ValidationErrorResponse
from modelcert.errors import NotFoundError, UserError
from modelcert.store.outage import describe_outage, is_database_unavailable

log = logging.getLogger(__name__)

# What a client is told to wait before trying again while the database is unavailable.
RETRY_AFTER_S = 5
DATABASE_UNAVAILABLE = (
    f"database unavailable: the service cannot reach its database; retry in {RETRY_AFTER_S} s"
)

# The first element of a validation error's location says where the value came from.
_SOURCES = {"body", "query", "path", "header", "cookie"}


def field_path(loc: Sequence[int | str]) -> str:
    """`("query", "role")` → `role`, `("body", "items", 0)` → `items.0`, `("body",)` → `body`."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] in _SOURCES:
        parts = parts[1:]
    return ".".join(parts)


async def user_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """`UserError` → 400, `NotFoundError` → 404, with the message and the field."""
    assert isinstance(exc, UserError)
    code = (
        status.HTTP_404_NOT_FOUND if isinstance(exc, NotFoundError) else status.HTTP_400_BAD_REQUEST
    )
    return JSONResponse(status_code=code, content={"detail": exc.message, "field": exc.field})


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """422 whose `detail` is one sentence naming the field, plus every error in `errors`."""
    assert isinstance(exc, RequestValidationError)
    # Location, message and type only: pydantic's `input` and `ctx` would echo what was
    # sent back to the caller (and into any log of responses), secrets included.
    errors: list[dict[str, Any]] = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    if not errors:  # not expected from FastAPI; still a well-formed answer
        return JSONResponse(status_code=422, content={"detail": "invalid request"})
    first = field_path(errors[0]["loc"])
    if request.url.path.startswith("/dashboard/") and "text/html" in request.headers.get(
        "accept", ""
    ):
        # A browser (it asks for HTML) sent a dashboard form: a page naming the field, not
        # raw JSON. Other clients of the dashboard's URLs keep the JSON body.
        from modelcert.api.dashboard.web import invalid_input_page

        return invalid_input_page(request, first, errors[0]["msg"])
    return JSONResponse(
        status_code=422,
        content={"detail": f"{first}: {errors[0]['msg']}", "errors": errors, "field": first},
    )


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
_ERROR_DOCS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The request is well formed but cannot be done as asked.", {}),
    401: (
        "No API key, or an unknown or revoked one.",
        {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
    ),
    403: ("The key's role is too low for this operation.", {}),
    404: ("What the request names does not exist.", {}),
    409: ("The request conflicts with the current state.", {}),
    413: ("The request body is larger than the API accepts.", {}),
    422: ("A parameter or the body is invalid: `field` names the first one.", {}),
    429: (
        "Too many failed authentications from this client, or too many open streams.",
        _RETRY_AFTER,
    ),
    503: ("The database is out of reach; retry later.", _RETRY_AFTER),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses: each with the one error schema
    (`ErrorResponse`; `ValidationErrorResponse` for 422) and its headers."""
    documented: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description, headers = _ERROR_DOCS[code]
        entry: dict[str, Any] = {
            "model": ValidationErrorResponse if code == 422 else ErrorResponse,
            "description": description,
        }
        if headers:
            entry["headers"] = headers
        documented[code] = entry
    return documented


# What each kind of route may answer besides its own statuses.
VIEWER_ERRORS = (401, 429, 503)  # any key: no 403, viewer is the lowest role
ROLE_ERRORS = (401, 403, 429, 503)  # operator or admin
BODY_ERRORS = (413, 422)


def database_unavailable_response(detail: str = DATABASE_UNAVAILABLE) -> JSONResponse:
    """503 `{"detail": …}` with `Retry-After`: what any route answers during an outage."""
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": detail},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class DatabaseOutageMiddleware:
    """Turns an error that means "the database is out of reach" (`store.outage`), raised
    anywhere in a request (the API-key lookup, a dashboard page, a route, the queue
    client), into a 503 with Retry-After and one log line, instead of a 500 and a
    traceback. Every other error goes on to the server's own 500 handling, unchanged.

    A middleware rather than an exception handler: it sees the errors a library raised
    from a driver error (DBOS) too, and those of any type; and Starlette's handler for
    `Exception` would re-raise (and log the traceback) after answering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            # Once a response has started (a stream) it cannot become a 503.
            if started or not is_database_unavailable(exc):
                raise
            log.warning(
                "%s %s: 503, database unavailable: %s: %s",
                scope.get("method", "?"),
                scope.get("path", "?"),
                type(exc).__name__,
                describe_outage(exc),
            )
            await database_unavailable_response()(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app`, and the outage middleware."""
    app.add_exception_handler(UserError, user_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(DatabaseOutageMiddleware)
