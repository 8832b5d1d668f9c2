"""The FastAPI application: routers, middleware, keys and the models' lifespan.

``create_app(settings)`` loads everything in the lifespan (``/readyz`` is 503 until then);
``create_app(settings, service=...)`` serves a ready-made :class:`~serving.service.Service`
(tests, the simulator). Every caller is untrusted: ``/v1`` needs an API key with the route's
scope (``serving/security.py``), bodies are capped while they are read, and every error is a
JSON body that is safe to render. Status codes: 400 bad input, 401 no or unknown key, 403 missing
scope or another key's request, 404 unknown id, 409 idempotency conflict, 413 body or upload too
large, 422 schema violation, 429 queue full or rate limit (Retry-After), 503 overloaded, store
down or not ready (Retry-After), 504 timed out.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.errors import on_http_error, on_validation_error
from serving.middleware import BodyLimit, ErrorGuard, Metrics, SecurityHeaders
from serving.routes import catalog, experiments, feedback, generation, ops
from serving.security import KeyRing, load_keys_file, new_token
from serving.service import Service, build_service
from serving.settings import ServingSettings
from serving.store import StoreUnavailable

log = logging.getLogger("ragar.serving")
DEMO_SCOPES = ["generate", "feedback", "report"]


def key_ring(settings: ServingSettings) -> tuple[KeyRing, str | None]:
    """The accepted keys (file, then environment) and, in demo mode, a fresh demo token."""
    specs = [*(load_keys_file(settings.api_keys_file) if settings.api_keys_file else []), *settings.api_keys]
    ring = KeyRing(specs, settings.rate_per_s, settings.rate_burst)
    demo = None
    if settings.demo:
        demo = new_token()
        ring.add_token("demo", demo, DEMO_SCOPES)
    return ring, demo


def _lifespan(settings: ServingSettings, service: Service | None):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        """Models load in the background: the port answers at once (/healthz 200) while /readyz
        says 503 until loading is done, as a load balancer or Kubernetes expects."""
        app.state.service = None
        app.state.load_error = None

        async def load() -> None:
            try:
                svc = service or await run_in_threadpool(build_service, settings)
                await run_in_threadpool(svc.load_arm_models)
                await svc.batcher.start()
                app.state.service = svc
                svc.ready = True
            except Exception as e:  # reported by /readyz and the log; the process stays up to say so
                app.state.load_error = f"{type(e).__name__}: {e}"
                log.exception("loading the models failed")

        task = asyncio.create_task(load(), name="load-models")
        try:
            yield
        finally:
            task.cancel()
            svc = app.state.service
            if svc is not None:
                svc.ready = False
                await svc.batcher.stop()

    return lifespan


def create_app(settings: ServingSettings | None = None, service: Service | None = None) -> FastAPI:
    settings = settings or (service.settings if service else ServingSettings())
    app = FastAPI(title="RAGAR", version="0.1.0", lifespan=_lifespan(settings, service), docs_url=None,
                  redoc_url=None, description="Personalized image generation per user, with A/B experiments and "
                  "an event store. Send an API key as `Authorization: Bearer <key>`.")
    app.state.settings = settings
    app.state.keys, demo_key = key_ring(settings)
    app.state.page_html = ops.page_html(demo_key)
    app.state.docs = ops.docs_pages(app.title, app.openapi_url)
    if demo_key:
        log.warning("demo mode: the try-it page carries a generated key with scopes %s", ", ".join(DEMO_SCOPES))

    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request, exc: StoreUnavailable):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})

    for r in (ops.router, generation.router, feedback.router, experiments.router, catalog.router):
        app.include_router(r)
    app.mount("/static", StaticFiles(directory=ops.STATIC), name="static")
    app.mount("/docs-assets", StaticFiles(directory=ops.DOCS_ASSETS), name="docs-assets")

    # innermost first: metrics see the route; CORS answers preflights; the body limit holds before
    # any parsing; every response, a 413 too, gets the security headers; nothing escapes the guard
    app.add_middleware(Metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(BodyLimit, limit=lambda: settings.body_limit)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ErrorGuard)
    return app
