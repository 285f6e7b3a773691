"""The suites pages: every loaded suite (its current version, where it attaches, whether
it keeps the built-in battery), and one suite's tests, assertions, versions and the YAML
it was loaded from. Read-only: suites are loaded from files (`modelcert suite load`,
`POST /api/suites`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from modelcert.api.dashboard.web import LoginDep, error_page, render
from modelcert.api.deps import SessionDep
from modelcert.errors import UserError
from modelcert.store import suites as store

router = APIRouter()

SuiteName = Annotated[str, Path(pattern="^[a-z0-9][a-z0-9-]{0,39}$", max_length=40)]
Version = Annotated[str | None, Query(pattern="^[0-9a-f]{6,64}$")]


@router.get("/suites", response_class=HTMLResponse)
def suites_page(request: Request, login: LoginDep, session: SessionDep) -> Response:
    """The loaded suites, removed ones last."""
    rows = [store.summary(row) for row in store.list_suites(session, include_removed=True)]
    rows.sort(key=lambda row: (not row["active"], row["name"]))
    return render(request, login, "suites.html", page="suites", suites=rows)


@router.get("/suites/{name}", response_class=HTMLResponse)
def suite_page(
    name: SuiteName,
    request: Request,
    login: LoginDep,
    session: SessionDep,
    version: Version = None,
) -> Response:
    """One suite version (the current one unless `?version=`): tests, assertions, the
    versions loaded, the source."""
    try:
        versions = [store.summary(row) for row in store.suite_versions(session, name)]
        # A removed suite is still shown: runs name its versions.
        shown = store.detail(store.get_suite(session, name, version, include_removed=True))
    except UserError as exc:
        return error_page(request, login, 404, exc.message)
    return render(
        request, login, "suite.html", page="suites", suite=shown, versions=versions
    )  # fmt: skip
