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
from modelcert.api.dashboard.web import (
    PREFIX,
    cross_site_refusal,
    read_form,
    render,
    safe_next,
    same_origin,
    secure_cookies,
)
from modelcert.api.deps import SessionDep
from modelcert.api.edges import AuthMetrics, FailedAuthLimiter, client_address

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
    """Exchange an API key for a session cookie. The key itself is not kept or logged.
    Refused from another site (login CSRF), and after too many failures from one client."""
    if not same_origin(request):
        return cross_site_refusal(request, None)
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    metrics: AuthMetrics = request.app.state.auth_metrics
    client = client_address(request.scope)
    wait = limiter.retry_after(client)
    if wait is not None:
        metrics.record("dashboard", "rate_limited")
        page = render(
            request,
            None,
            "login.html",
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            next_page=PREFIX + "/",
            error=f"Too many failed logins from this address: try again in {wait} s.",
        )
        page.headers["Retry-After"] = str(wait)
        return page
    form = await read_form(request)
    next_page = safe_next(form.get("next"))
    presented = form.get("api_key", "")
    token = start_session(session, presented) if presented else None
    if token is None:
        limiter.record_failure(client)
        metrics.record("dashboard", "invalid" if presented else "missing")
        log.warning("dashboard login with an invalid or revoked key rejected (client %s)", client)
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
    """End the session (a POST from this site: a link, an image or a form elsewhere cannot
    log anyone out)."""
    if not same_origin(request):
        return cross_site_refusal(request, None)
    end_session(session, request.cookies.get(COOKIE_NAME))
    session.commit()
    response = RedirectResponse(f"{PREFIX}/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE_NAME, path=PREFIX)
    return response
