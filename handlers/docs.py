"""/openapi.json, /docs (Swagger UI) and /dashboard, public. Their assets are served from
here (Swagger UI's from the installed swagger-ui-bundle-v2 package, the dashboard's from
`handlers/dashboard/`): no CDN, so both work offline. The dashboard holds no data itself: its
script calls the API with the token the operator pastes in.

The document describes every route of the API, so building it imports every route group;
that happens on the first request, not at import, to keep this function's cold start small.
"""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from handlers._http import lambda_app

ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})

# Relative URLs, so the page also works under a path prefix (an API Gateway stage).
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>taskgate API</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script src="docs/assets/init.js"></script>
</body>
</html>
"""
# A file of its own, not inline: the page's Content-Security-Policy allows no inline script.
# A token pasted into "Authorize" lives in the page's memory only (never localStorage).
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""
# Scripts from this origin only; Swagger UI sets style attributes and draws icons as data: URLs.
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


DASHBOARD_DIR = Path(__file__).parent / "dashboard"
DASHBOARD_ASSETS = {
    **{
        f"{name}.js": "text/javascript"
        for name in ("app", "api", "format", "chart", "servers", "tasks", "detail", "stream", "stats")
    },
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# No inline script or style, nothing from another origin: the API is same-origin, and so is
# /ws on one machine. On AWS task updates come from the WebSocket API, another origin: its URL
# (WEBSOCKET_URL, set by template.yaml) is told to the page and allowed by connect-src.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{websocket}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DASHBOARD_HEADERS = {
    "Content-Security-Policy": CSP.format(websocket=""),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
WEBSOCKET_META = '<meta name="taskgate-websocket" content="{url}">'


def websocket_url() -> str | None:
    """WEBSOCKET_URL if set; a value that is not a plain ws(s) URL is refused at once (it goes
    into a header and the page)."""
    value = os.environ.get("WEBSOCKET_URL", "")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("wss", "ws") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"WEBSOCKET_URL must be a ws:// or wss:// URL without a query, got {value!r}")
    if any(c in value for c in " ;,'\"<>\n\r"):
        raise ValueError(f"WEBSOCKET_URL has a character a URL here may not: {value!r}")
    return value


@functools.cache
def dashboard_page(url: str | None) -> tuple[bytes, dict[str, str]]:
    """index.html and its headers, told the WebSocket API's URL when there is one."""
    page = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    if url is None:
        return page.encode(), DASHBOARD_HEADERS
    meta = WEBSOCKET_META.format(url=html.escape(url, quote=True))
    page = page.replace('<meta charset="utf-8">', f'<meta charset="utf-8">\n  {meta}', 1)
    return page.encode(), {**DASHBOARD_HEADERS, "Content-Security-Policy": CSP.format(websocket=f" {url}")}


@functools.cache
def document() -> bytes:
    """The OpenAPI document as served; static for the life of the process."""
    import msgspec

    from handlers.openapi import build_spec
    from handlers.routes import ROUTES

    return msgspec.json.encode(build_spec(ROUTES))


@functools.cache
def _assets_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(str(swagger_ui_path))


async def openapi_json(request: Request) -> Response:
    return Response(document(), media_type="application/json")


async def swagger_ui(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=DOCS_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "init.js":
        return Response(INIT_JS, media_type="text/javascript", headers=DOCS_HEADERS)
    if name not in ASSETS:
        raise HTTPException(404)
    return FileResponse(
        _assets_dir() / name, headers={"Cache-Control": "public, max-age=86400", **DOCS_HEADERS}
    )


async def root(request: Request) -> Response:
    # Relative, so it lands on the dashboard under a path prefix (an API Gateway stage) too.
    return RedirectResponse("dashboard", status_code=302)


async def dashboard(request: Request) -> Response:
    page, headers = dashboard_page(websocket_url())
    return Response(page, media_type="text/html", headers=headers)


async def dashboard_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in DASHBOARD_ASSETS:
        raise HTTPException(404)
    return FileResponse(DASHBOARD_DIR / name, media_type=DASHBOARD_ASSETS[name], headers=DASHBOARD_HEADERS)


routes = [
    Route("/", root, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", swagger_ui, methods=["GET"]),
    Route("/docs/assets/{name}", asset, methods=["GET"], include_in_schema=False),
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/assets/{name}", dashboard_asset, methods=["GET"], include_in_schema=False),
]

app, handler = lambda_app(routes)
