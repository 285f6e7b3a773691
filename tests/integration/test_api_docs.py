"""/docs works offline: the page and everything it loads come from the API itself."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from modelcert.api.app import create_app
from modelcert.settings import Settings


def test_the_docs_page_loads_only_files_the_api_serves(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    with TestClient(create_app(settings, session_factory=factory)) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert loaded, page.text
        assert all(url.startswith("/docs/static/") for url in loaded), loaded
        assert "url: '/openapi.json'" in page.text or '"/openapi.json"' in page.text
        assert '"validatorUrl": null' in page.text  # no call to the public validator
        for url in loaded:
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
            assert b"sourceMappingURL" not in asset.content, url  # no 404s for maps
        bundle = client.get("/docs/static/swagger-ui-bundle.js").text
        assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000
        assert client.get("/docs/static/LICENSE").status_code == 200
        assert client.get("/docs/static/../app.py").status_code == 404
        assert client.get("/docs/static/index.html").status_code == 404
        assert client.get("/redoc").status_code == 404  # it would load from a CDN
        assert client.get("/openapi.json").json()["info"]["title"] == "modelcert"
        assert client.get("/docs/oauth2-redirect").status_code == 200
