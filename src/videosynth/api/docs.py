"""``/docs``: Swagger UI over ``/openapi.json``, from files this server holds.

FastAPI's own page loads Swagger UI from a CDN, which a server without internet (and the people behind its
firewall) cannot reach; the ``swagger-ui-py`` package carries the same files, served here as they are.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def _swagger_ui_static() -> Path:
    # Located, not imported: the package's own module pulls in jinja2 and PyYAML, which serving files needs not.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed; it is one of videosynth's dependencies")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_routes(title: str, openapi_url: str = "/openapi.json") -> list[BaseRoute]:
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    ).body

    async def docs(_request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return [
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
        Mount(ASSETS, app=StaticFiles(directory=_swagger_ui_static()), name="swagger-ui"),
    ]
