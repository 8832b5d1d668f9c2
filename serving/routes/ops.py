"""Health, readiness, metrics, the try-it page and the API docs (Swagger UI and ReDoc served from
installed packages, so they work offline), each page with a Content-Security-Policy that allows
only its own scripts."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from serving.deps import AUTH_ERRORS, ERR, metrics_caller

router = APIRouter(tags=["ops"])
STATIC = Path(__file__).resolve().parents[1] / "static"
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def _docs_csp(page: str) -> str:
    """Allow exactly the page's inline scripts (by hash); ReDoc injects styles, and its workers."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in _INLINE_SCRIPT.findall(page))
    return (f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")


def docs_pages(title: str, openapi_url: str) -> dict[str, tuple[str, str]]:
    """``{path: (html, csp)}`` for /docs and /redoc, built once."""
    swagger = get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - Swagger UI",
                                  swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                  swagger_css_url="/docs-assets/swagger-ui.css",
                                  swagger_favicon_url="/docs-assets/favicon.png").body.decode()
    redoc = get_redoc_html(openapi_url=openapi_url, title=f"{title} - ReDoc",
                           redoc_js_url="/docs-assets/redoc.standalone.js", with_google_fonts=False,
                           redoc_favicon_url="/docs-assets/favicon.png").body.decode()
    return {"/docs": (swagger, _docs_csp(swagger)), "/redoc": (redoc, _docs_csp(redoc))}


def page_html(demo_key: str | None) -> str:
    """The try-it page; in demo mode it carries the demo key, otherwise it asks for one."""
    page = (STATIC / "index.html").read_text()
    return page.replace('content="" id="demo-key"', f'content="{html.escape(demo_key or "")}" id="demo-key"')


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about models or the database)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready", **ERR}})
async def readyz(request: Request) -> dict[str, str]:
    """200 once the models are loaded and the event store answers."""
    svc = getattr(request.app.state, "service", None)
    if getattr(request.app.state, "load_error", None):
        raise HTTPException(503, f"loading the models failed: {request.app.state.load_error}")
    if svc is None or not svc.ready:
        raise HTTPException(503, "models are still loading", headers={"Retry-After": "5"})
    if not await run_in_threadpool(svc.store.ping):
        raise HTTPException(503, "event store unavailable", headers={"Retry-After": str(svc.settings.retry_after_s)})
    return {"status": "ready"}


@router.get("/metrics", response_class=Response, responses=AUTH_ERRORS, dependencies=[Depends(metrics_caller)])
async def metrics(request: Request) -> Response:
    """Prometheus exposition (a ``report`` key, unless the settings open it to a trusted network)."""
    svc = getattr(request.app.state, "service", None)
    body = svc.metrics.exposition() if svc is not None else b""
    return Response(body, media_type="text/plain; version=0.0.4")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page_html, headers={"Content-Security-Policy": PAGE_CSP})


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
@router.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    body, csp = request.app.state.docs[request.url.path]
    return HTMLResponse(body, headers={"Content-Security-Policy": csp})
