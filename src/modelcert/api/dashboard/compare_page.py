"""Two runs of one deployment compared test by test (the same comparison as `modelcert
runs diff` and `GET /api/runs/diff`): reachable from a run's page and by URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BeforeValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelcert.api.dashboard.web import LoginDep, error_page, render
from modelcert.api.deps import SessionDep
from modelcert.errors import UserError
from modelcert.reports import runs as history
from modelcert.store.models import CertificationRun
from modelcert.validation import RowId

router = APIRouter()


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


FormRunId = Annotated[RowId | None, BeforeValidator(_blank_is_none)]


def run_before(session: Session, run: CertificationRun) -> int | None:
    """The id of the run before `run` of the same deployment in the same region."""
    return session.scalar(
        select(CertificationRun.id)
        .where(
            CertificationRun.deployment_id == run.deployment_id,
            CertificationRun.region == run.region,
            CertificationRun.id < run.id,
        )
        .order_by(CertificationRun.id.desc())
        .limit(1)
    )


@router.get("/runs/compare", response_class=HTMLResponse)
def compare(
    request: Request,
    login: LoginDep,
    session: SessionDep,
    b: Annotated[RowId, Query()],
    a: Annotated[FormRunId, Query()] = None,
) -> Response:
    """Run `a` against run `b`; without `a`, the run before `b` of the same deployment
    in the same region."""
    if a is None:
        later = session.get(CertificationRun, b)
        if later is None:
            return error_page(request, login, 404, f"unknown run {b}", "b")
        a = run_before(session, later)
        if a is None:
            return error_page(
                request, login, 404, f"run {b} is the first of its deployment in its region", "a"
            )
    try:
        diff = history.diff_runs(session, a, b)
    except UserError as error:
        code = 404 if error.message.startswith("unknown run") else 400
        return error_page(request, login, code, error.message, error.field)
    return render(request, login, "compare.html", page="matrix", diff=diff)
