"""What every dashboard route shares: templates, the login behind the session cookie,
flash messages, form bodies and the CSRF check."""

from __future__ import annotations

import hmac
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from modelcert.api.dashboard.charts import sparkline
from modelcert.api.dashboard.sessions import COOKIE_NAME, Login, current_login
from modelcert.api.deps import SessionDep
from modelcert.store.api_keys import Role
from modelcert.store.models import utcnow

PREFIX = "/dashboard"
HERE = Path(__file__).parent
FLASH_COOKIE = "modelcert_flash"
MAX_FORM_BYTES = 64 * 1024

templates = Jinja2Templates(directory=HERE / "templates")


def _age(value: datetime | None) -> str:
    """'3 min ago'-style text for a past time."""
    if value is None:
        return "—"
    seconds = max(0, int((utcnow() - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _ms(value: float | None) -> str:
    return f"{value:,.0f} ms" if value is not None else "—"


templates.env.filters.update(age=_age, when=_when, ms=_ms, sparkline=sparkline)


def secure_cookies(request: Request) -> bool:
    """Mark cookies `Secure` when the browser reached us over https (directly or via a
    proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def get_login(request: Request, session: SessionDep) -> Login:
    """The logged-in user; otherwise a redirect to the login page (303)."""
    login = current_login(session, request.cookies.get(COOKIE_NAME))
    # End the read now: on SQLite every transaction takes the write lock, and an action
    # writes through other connections (the queue's) during the same request.
    session.commit()
    if login is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            status.HTTP_303_SEE_OTHER,
            detail="log in first",
            headers={"Location": f"{PREFIX}/login?next={quote(target, safe='')}"},
        )
    return login


LoginDep = Annotated[Login, Depends(get_login)]


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (the only kind our forms send)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, detail="form too large")
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site: an `Origin` (or,
    without one, a `Referer`) whose host is not this one, or `Sec-Fetch-Site: cross-site`.
    A request without any of them (not a browser's) passes: the CSRF token decides."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True
    if source == "null":
        return False
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(source).netloc.lower() == host.split(",")[0].strip().lower()


def cross_site_refusal(request: Request, login: Login | None) -> HTMLResponse:
    return error_page(
        request,
        login,
        status.HTTP_403_FORBIDDEN,
        "This form was sent from another site (Origin check failed). Open the dashboard "
        "and try again from there.",
    )


def csrf_matches(sent: str, expected: str) -> bool:
    """Constant-time, on bytes: a token with non-ASCII characters is simply wrong."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def check_operator(request: Request, login: Login, form: dict[str, str]) -> Response | None:
    """A 403 page unless an operator sent the form, from this site, with this session's
    CSRF token."""
    if not same_origin(request):
        return cross_site_refusal(request, login)
    if not csrf_matches(form.get("csrf_token", ""), login.csrf_token):
        return error_page(
            request,
            login,
            status.HTTP_403_FORBIDDEN,
            "The form has expired or did not come from this dashboard (CSRF check failed). "
            "Reload the page and try again.",
        )
    if login.role < Role.operator:
        return error_page(
            request,
            login,
            status.HTTP_403_FORBIDDEN,
            f"This needs the operator role; API key {login.key_name!r} has the "
            f"{login.role.value} role (read-only).",
        )
    return None


def render(
    request: Request,
    login: Login | None,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page, with the flash message left by the previous action (then forgotten)."""
    flash = _read_flash(request)
    response = templates.TemplateResponse(
        request,
        template,
        {"login": login, "flash": flash, "prefix": PREFIX, **context},
        status_code=status_code,
    )
    if flash:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def error_page(
    request: Request, login: Login | None, code: int, message: str, field: str | None = None
) -> HTMLResponse:
    return render(
        request, login, "error.html", status_code=code, code=code, message=message, field=field
    )


def redirect_with_flash(
    request: Request, location: str, message: str, level: str = "ok"
) -> RedirectResponse:
    """After an action: back to a page that shows `message` once."""
    response = RedirectResponse(location, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        FLASH_COOKIE,
        quote(json.dumps({"message": message, "level": level})),
        max_age=60,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    return response


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("message"), str):
        return None
    level = value.get("level") if value.get("level") in ("ok", "error") else "ok"
    return {"message": value["message"], "level": str(level)}


def safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never an open redirect elsewhere."""
    if target and target.startswith(PREFIX) and not target.startswith("//"):
        return target
    return PREFIX + "/"


def invalid_input_page(request: Request, field: str, problem: str) -> HTMLResponse:
    """A dashboard page's parameter refused (422): a page that names the field and says
    what is wrong with it, for the person who filled in the form; never raw JSON."""
    login = None
    try:
        with request.app.state.session_factory() as session:
            login = current_login(session, request.cookies.get(COOKIE_NAME))
    except Exception:  # the page explains the input either way (an outage is its own 503)
        login = None
    label = FIELD_LABELS.get(field, field)
    return error_page(
        request,
        login,
        422,
        f"{label}: {problem}. Correct it and try again.",
        field=field,
    )


# How a form names its fields to the person filling it in.
FIELD_LABELS = {
    "date_from": "from (date)",
    "date_to": "to (date)",
    "page": "page",
    "q": "search",
}
