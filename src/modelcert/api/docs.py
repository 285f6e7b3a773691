"""The API's interactive documentation at /docs, served entirely by the API itself.

FastAPI's default /docs page loads Swagger UI from a CDN, so without the internet it is
blank. Here the same page loads a vendored copy shipped in the package
(`api/static/swagger-ui/`: Swagger UI 5, Apache-2.0, see VERSION there), as FastAPI's
"custom docs UI static assets" recipe does. ReDoc (/redoc) is off: it too would load from
a CDN, and Swagger UI already shows every operation and schema (/openapi.json is there
for any other viewer)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS = Path(__file__).parent / "static" / "swagger-ui"
STATIC = "/docs/static"
FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain",
    "NOTICE": "text/plain",
    "VERSION": "text/plain",
}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    """Swagger UI on this API's OpenAPI document, from local files only."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} — API docs",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}{STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC}/favicon-32x32.png",
        # No call to the public validator service (it would be a request off the host).
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )


@router.get("/docs/oauth2-redirect")
def oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(STATIC + "/{name}")
def asset(name: str) -> Response:
    if name not in FILES:
        return Response(status_code=404)
    return FileResponse(
        ASSETS / name, media_type=FILES[name], headers={"Cache-Control": "max-age=86400"}
    )
