"""The web app: the feed at ``/`` and the live dashboard at ``/dashboard``.

Plain HTML, CSS and ES modules under ``api/web/``, served as they are: nothing to build,
nothing fetched from elsewhere. The pages hold no data; their scripts call the JSON API
with the keys the user typed in (kept in the tab's sessionStorage), so every existing
check applies to them as to any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

# Only this origin's scripts, styles and API: an injected <script> or inline handler does
# not run, and the pages cannot be framed (clickjacking "like" or "forget me").
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["web app"], include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/")
async def get_feed_page() -> FileResponse:
    """The feed: a user's recommendations, actions on them, the profile and forget me."""
    return _page("feed.html")


@router.get("/dashboard")
async def get_dashboard_page() -> FileResponse:
    """The live dashboard: throughput, lag, freshness, quality, models, strategies, alerts."""
    return _page("dashboard.html")


class _Static(StaticFiles):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount_web_app(app: FastAPI) -> None:
    """Serve the pages and their static files (scripts, styles, icon) from this app, and
    the API docs (/docs) with Swagger UI's files from the installed swagger-ui-bundle, so
    they work without the internet."""
    app.include_router(router)
    app.mount("/static", _Static(directory=WEB_DIR / "static"), name="static")
    app.mount("/docs-assets", _Static(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def get_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
