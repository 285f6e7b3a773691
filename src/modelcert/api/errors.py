"""Errors as JSON a client can act on: the message, and the field it is about."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from modelcert.errors import NotFoundError, UserError

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


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
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
    return JSONResponse(
        status_code=422,
        content={"detail": f"{first}: {errors[0]['msg']}", "errors": errors, "field": first},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on `app`."""
    app.add_exception_handler(UserError, user_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
