"""The web page and the API docs page (Swagger UI served from local files)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.analytics.security import CONTENT_SECURITY_POLICY

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DOCS_ASSETS = "/docs-assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def mount_assets(app: FastAPI) -> None:
    """The page's files and Swagger UI's, from the swagger-ui-bundle package: the default
    docs page loads a CDN, and the service must work without internet."""
    import swagger_ui_bundle

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs")


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    app = request.app
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - API docs",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
    )
    # The page starts Swagger UI from an inline script: allow exactly that script (by its
    # hash) and the inline styles Swagger UI sets, nothing else.
    html = bytes(page.body).decode()
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()}'"
        for code in _INLINE_SCRIPT.findall(html)
    )
    page.headers["content-security-policy"] = (
        f"{CONTENT_SECURITY_POLICY}; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'"
    )
    return page
