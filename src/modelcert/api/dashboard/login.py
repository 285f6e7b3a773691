"""Log in with an API key, log out."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modelcert.api.dashboard.sessions import (
    COOKIE_NAME,
    SESSION_LIFETIME,
    current_login,
    end_session,
    start_session,
)
from modelcert.api.dashboard.web import PREFIX, read_form, render, safe_next, secure_cookies
from modelcert.api.deps import SessionDep

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    session: SessionDep,
    next_page: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> Response:
    """The login form; straight on when already logged in."""
    if current_login(session, request.cookies.get(COOKIE_NAME)) is not None:
        return RedirectResponse(safe_next(next_page), status_code=status.HTTP_303_SEE_OTHER)
    return render(request, None, "login.html", next_page=safe_next(next_page), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, session: SessionDep) -> Response:
    """Exchange an API key for a session cookie. The key itself is not kept or logged."""
    form = await read_form(request)
    next_page = safe_next(form.get("next"))
    token = start_session(session, form.get("api_key", ""))
    if token is None:
        log.warning("dashboard login with an invalid or revoked key rejected")
        return render(
            request,
            None,
            "login.html",
            status_code=status.HTTP_401_UNAUTHORIZED,
            next_page=next_page,
            error="Invalid or revoked API key.",
        )
    session.commit()
    response = RedirectResponse(next_page, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    """End the session (a POST: a link or an image elsewhere cannot log anyone out)."""
    end_session(session, request.cookies.get(COOKIE_NAME))
    session.commit()
    response = RedirectResponse(f"{PREFIX}/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE_NAME, path=PREFIX)
    return response
