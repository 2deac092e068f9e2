"""/docs without a network: Swagger UI's JS and CSS served from the `swagger-ui-bundle` package, not a CDN.

FastAPI's /redoc loads ReDoc from a CDN (a blank page offline) and no package ships it without Django: the app is
built with `redoc_url=None`, and /redoc redirects here so an old link still lands on working docs."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"
SPEC = "/docs-openapi.json"  # the schema as the bundled Swagger UI reads it


def install_docs(app: FastAPI) -> None:
    """Serve /docs and its assets, and /redoc as a redirect to /docs; the app must be built with `docs_url=None`
    and `redoc_url=None`, and this called before the Gradio mount at "/" (which would otherwise answer these paths)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get(SPEC, include_in_schema=False)
    def spec_for_the_bundled_ui() -> dict:
        # swagger-ui-bundle ships Swagger UI 3, which refuses an "openapi: 3.1.0" document ("does not specify a
        # valid version field") although it renders FastAPI's schema; /openapi.json itself stays 3.1.
        return {**app.openapi(), "openapi": "3.0.3"}

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy prefix, as FastAPI's own /docs does
        return get_swagger_ui_html(openapi_url=root + SPEC, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/docs")
