"""The web dashboard, served by the API at /dashboard: server-rendered pages (Jinja2),
one stylesheet and one small script shipped in the package (no CDN, no build step).
Login with an API key; viewers read, operators act."""

from __future__ import annotations

from fastapi import APIRouter

from modelcert.api.dashboard import (
    actions,
    audit_page,
    compare_page,
    cost_page,
    export_page,
    login,
    notifications_page,
    pages,
    suites_page,
)
from modelcert.api.dashboard.web import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)
router.include_router(login.router)
# Before pages: /runs/compare must not be taken for /runs/{run_id}.
router.include_router(compare_page.router)
router.include_router(pages.router)
router.include_router(actions.router)
router.include_router(audit_page.router)
router.include_router(cost_page.router)
router.include_router(notifications_page.router)
router.include_router(suites_page.router)
router.include_router(export_page.router)

__all__ = ["router"]
