"""The FastAPI application: generation, preferences, feedback, experiments, judgments, the page.

``create_app(settings)`` loads everything in the lifespan (``/readyz`` is 503 until then);
``create_app(settings, service=...)`` serves a ready-made :class:`~serving.service.Service`
(tests, the simulator). Errors are plain: 400 bad input, 404 unknown id, 409 idempotency conflict,
413 oversized upload, 422 schema violation or n above the cap, 429 queue full (Retry-After),
503 event store down or not ready (Retry-After), 504 request timed out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ragar.encoders.base import ImageInputError, load_rgb
from ragar.generation.personalize import PersonalizedResult
from serving.analysis import experiment_report, finite_or_none
from serving.batching import QueueFull
from serving.schemas import (
    AssignmentOut,
    CandidateOut,
    CompareRequest,
    CompareResponse,
    ErrorOut,
    ExperimentOut,
    ExperimentReport,
    FeedbackRequest,
    FeedbackResponse,
    GenerateRequest,
    GenerateResponse,
    HistoryItemOut,
    ItemOut,
    JudgmentRequest,
    JudgmentResponse,
    PreferenceResponse,
    Timings,
    UserOut,
)
from serving.service import Job, Service, build_service
from serving.settings import ServingSettings
from serving.store import FeedbackConflict, StoreUnavailable, UnknownRequest

log = logging.getLogger("ragar.serving")
STATIC = Path(__file__).resolve().parent / "static"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ERRORS = {400: {"description": "bad input", "model": ErrorOut}, 404: {"description": "unknown id", "model": ErrorOut},
          503: {"description": "event store down or service not ready", "model": ErrorOut}}
ERR = {"model": ErrorOut}


def get_service(request: Request) -> Service:
    svc = getattr(request.app.state, "service", None)
    if svc is None or not svc.ready:
        raise HTTPException(503, "models are still loading", headers={"Retry-After": "5"})
    return svc


class _Metrics:
    """Counts and times every request by route template and experiment arm. Plain ASGI (not
    BaseHTTPMiddleware), so that endpoints still see the client disconnect and can cancel."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            svc = getattr(scope.get("app").state, "service", None) if scope.get("app") else None
            if svc is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                arm = (scope.get("state") or {}).get("arm", "-")
                svc.metrics.requests.labels(path, arm, str(status["code"])).inc()
                svc.metrics.latency.labels(path, arm).observe(time.perf_counter() - t0)


def _history_out(h) -> HistoryItemOut:
    return HistoryItemOut(item_id=h.item_id, weight=h.weight, similarity=h.similarity, event_type=h.event_type,
                          image_url=f"/v1/items/{h.item_id}/image")


def _require_item(svc: Service, item_id: str) -> None:
    if item_id not in svc.item_ids:
        raise HTTPException(404, f"unknown item {item_id!r}: not in the catalog")


def _response(svc: Service, request_id: str, arm: str, res: PersonalizedResult, info, total_s: float,
              pngs: list[bytes] | None) -> GenerateResponse:
    cands = [CandidateOut(index=j, url=f"/v1/images/{request_id}/{j}.png",
                          b64_png=base64.b64encode(pngs[j]).decode() if pngs else None,
                          preference_fit=finite_or_none(c.preference_fit), identity=finite_or_none(c.identity),
                          selection=float(c.selection)) for j, c in enumerate(res.candidates)]
    hist = [_history_out(h) for h in res.history[:20]]
    t = res.timings
    return GenerateResponse(
        request_id=request_id, user_id=res.user_id, experiment=svc.experiment.name, arm=arm, method=res.method,
        reference_item_id=res.reference_item_id, reference_source=res.reference_source, fallback=res.fallback,
        cold_start_ranker=res.cold_start_ranker, seed=res.seed, chosen=res.chosen, candidates=cands, history=hist,
        timings=Timings(queue_s=info.queue_s, batch_size=info.size, retrieval_s=t["retrieval_s"],
                        generation_s=t["generation_s"], scoring_s=t["scoring_s"], total_s=total_s))


def _payload(res: PersonalizedResult, info) -> dict:
    return {"candidates": [{"preference_fit": finite_or_none(c.preference_fit), "identity": finite_or_none(c.identity),
                            "selection": float(c.selection)} for c in res.candidates],
            "history": [[h.item_id, h.weight, h.similarity] for h in res.history[:50]],
            "cold_start_ranker": res.cold_start_ranker, "batch_size": info.size}


async def _decode_reference(svc: Service, body: GenerateRequest):
    if (body.reference_item_id is None) == (body.reference_image is None):
        raise HTTPException(400, "give exactly one of reference_item_id and reference_image")
    if body.reference_item_id is not None:
        _require_item(svc, body.reference_item_id)
        return None
    if len(body.reference_image) > svc.settings.max_upload_bytes * 4 // 3 + 4:
        raise HTTPException(413, f"reference_image is larger than {svc.settings.max_upload_bytes} bytes")
    try:
        raw = base64.b64decode(body.reference_image, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "reference_image is not valid base64") from None
    if len(raw) > svc.settings.max_upload_bytes:
        raise HTTPException(413, f"reference_image is {len(raw)} bytes, above the {svc.settings.max_upload_bytes} "
                                 "byte limit")
    try:
        return await run_in_threadpool(load_rgb, raw)
    except ImageInputError as e:
        raise HTTPException(400, f"reference_image: {e}") from None


async def _await_result(request: Request, svc: Service, fut: asyncio.Future):
    """Wait for the batch, giving up on timeout (504) or when the client went away (cancelled)."""
    deadline = time.perf_counter() + svc.settings.request_timeout_s
    while True:
        done, _ = await asyncio.wait({fut}, timeout=min(0.25, max(0.0, deadline - time.perf_counter())))
        if done:
            return fut.result()
        if time.perf_counter() >= deadline:
            fut.cancel()
            svc.metrics.rejected.labels("timeout").inc()
            raise HTTPException(504, f"generation did not finish within {svc.settings.request_timeout_s:g} s")
        if await request.is_disconnected():
            fut.cancel()
            svc.metrics.rejected.labels("abandoned").inc()
            raise HTTPException(499, "client closed the request")


async def _generate_one(request: Request, svc: Service, *, user_id: str, arm_name: str, key, job: Job,
                        base64_images: bool) -> GenerateResponse:
    t0 = time.perf_counter()
    try:
        fut = svc.batcher.submit(key, job)
    except QueueFull as e:
        svc.metrics.rejected.labels("queue_full").inc()
        raise HTTPException(429, f"too many pending requests: {e}",
                            headers={"Retry-After": str(svc.settings.retry_after_s)}) from None
    res, info = await _await_result(request, svc, fut)
    request_id = svc.new_request_id()
    pngs = await run_in_threadpool(svc.save_images, request_id, res)
    try:  # committed before the response leaves: an acknowledged exposure is in the store
        await run_in_threadpool(
            svc.store.record_exposure, request_id=request_id, experiment=svc.experiment.name, arm=arm_name,
            user_id=user_id, reference_item_id=res.reference_item_id, reference_source=res.reference_source,
            method=res.method, n=len(res.candidates), seed=res.seed, chosen=res.chosen, fallback=res.fallback,
            payload=_payload(res, info))
    except StoreUnavailable as e:
        await run_in_threadpool(svc.drop_images, request_id)
        raise HTTPException(503, str(e), headers={"Retry-After": str(svc.settings.retry_after_s)}) from None
    return _response(svc, request_id, arm_name, res, info, time.perf_counter() - t0,
                     pngs if base64_images else None)


def create_app(settings: ServingSettings | None = None, service: Service | None = None) -> FastAPI:
    settings = settings or (service.settings if service else ServingSettings())

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

    app = FastAPI(title="RAGAR", version="0.1.0", lifespan=lifespan,
                  description="Personalized image generation per user, with A/B experiments and an event store.")
    app.add_middleware(_Metrics)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable):
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up (says nothing about models or the database)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready", **ERR}})
    async def readyz(request: Request) -> dict[str, str]:
        """200 once the models are loaded and the event store answers."""
        svc = getattr(request.app.state, "service", None)
        if getattr(request.app.state, "load_error", None):
            raise HTTPException(503, f"loading the models failed: {request.app.state.load_error}")
        if svc is None or not svc.ready:
            raise HTTPException(503, "models are still loading", headers={"Retry-After": "5"})
        if not await run_in_threadpool(svc.store.ping):
            raise HTTPException(503, "event store unavailable", headers={"Retry-After": str(settings.retry_after_s)})
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        svc = getattr(request.app.state, "service", None)
        body = svc.metrics.exposition() if svc is not None else b""
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.post("/v1/generate", response_model=GenerateResponse, tags=["generation"],
              responses={**ERRORS, 413: {"description": "upload too large", **ERR},
                         429: {"description": "queue full", **ERR}, 504: {"description": "timed out", **ERR}})
    async def generate(body: GenerateRequest, request: Request,
                       svc: Service = Depends(get_service)) -> GenerateResponse:
        """N candidates for one user and reference, best first by the arm's trade-off; the exposure
        (arm, scores, weights) is committed before this returns."""
        arm = svc.experiment.assign(body.user_id)
        request.state.arm = arm.name
        key = svc.batch_key(arm, body.n)
        if key.n > svc.max_n:  # the same shape as FastAPI's own validation errors
            raise HTTPException(422, [{"type": "less_than_equal", "loc": ["body", "n"], "input": key.n,
                                       "ctx": {"le": svc.max_n},
                                       "msg": f"n={key.n} is above the cap of {svc.max_n} candidates per request"}])
        pixels = await _decode_reference(svc, body)
        job = Job(body.user_id, body.reference_item_id, pixels, svc.new_seed() if body.seed is None else body.seed)
        return await _generate_one(request, svc, user_id=body.user_id, arm_name=arm.name, key=key, job=job,
                                   base64_images=body.response_format == "base64")

    @app.post("/v1/compare", response_model=CompareResponse, tags=["judgments"],
              responses={**ERRORS, 429: {"description": "queue full", **ERR}})
    async def compare(body: CompareRequest, request: Request, svc: Service = Depends(get_service)) -> CompareResponse:
        """Two methods, same seed, one candidate each, in random order: the rating view's pair."""
        _require_item(svc, body.reference_item_id)
        if body.methods[0] == body.methods[1]:
            raise HTTPException(400, "compare two different methods")
        seed = svc.new_seed() if body.seed is None else body.seed
        base = svc.experiment.assign(body.user_id)
        outs = await asyncio.gather(*[
            _generate_one(request, svc, user_id=body.user_id, arm_name=f"compare:{m}",
                          key=svc.batch_key(base, 1, method=m),
                          job=Job(body.user_id, body.reference_item_id, None, seed),
                          base64_images=False) for m in body.methods])
        if svc.new_seed() % 2:
            outs.reverse()
        return CompareResponse(a=outs[0], b=outs[1])

    @app.get("/v1/images/{request_id}/{index}.png", tags=["generation"], response_class=FileResponse,
             responses={404: {"description": "unknown image", **ERR}})
    async def image(request_id: str, index: int, svc: Service = Depends(get_service)):
        if not UUID_RE.match(request_id) or index < 0:
            raise HTTPException(404, "unknown image")
        path = svc.image_path(request_id, index)
        if not path.is_file():
            raise HTTPException(404, "unknown image")
        return FileResponse(path, media_type="image/png")

    @app.get("/v1/items", response_model=list[ItemOut], tags=["catalog"])
    async def items(limit: int = Query(50, ge=1, le=1000), category: str | None = None,
                    svc: Service = Depends(get_service)) -> list[ItemOut]:
        df = (svc.items if category is None else svc.items.filter(svc.items["category"] == category)).head(limit)
        titles = df["title"] if "title" in df.columns else [None] * df.height
        return [ItemOut(item_id=i, category=c, title=t, image_url=f"/v1/items/{i}/image")
                for i, c, t in zip(df["item_id"], df["category"], titles, strict=True)]

    @app.get("/v1/items/{item_id}/image", tags=["catalog"], response_class=FileResponse,
             responses={404: {"description": "unknown item", **ERR}})
    async def item_image(item_id: str, svc: Service = Depends(get_service)):
        path = svc.item_image(item_id)
        if path is None or not path.is_file():
            raise HTTPException(404, f"unknown item {item_id!r}")
        return FileResponse(path)

    @app.get("/v1/users", response_model=list[UserOut], tags=["catalog"])
    async def users(limit: int = Query(50, ge=1, le=1000), svc: Service = Depends(get_service)) -> list[UserOut]:
        top = svc.users.head(limit)
        return [UserOut(user_id=u, events=int(c)) for u, c in zip(top["user_id"], top["len"], strict=True)]

    @app.get("/v1/users/{user_id}/preference", response_model=PreferenceResponse, tags=["generation"],
             responses=ERRORS)
    async def preference(user_id: str, reference_item_id: str = Query(min_length=1),
                         top: int = Query(10, ge=1, le=100), svc: Service = Depends(get_service)) -> PreferenceResponse:
        """The user's history weighted against the reference, heaviest first (what the generator sees)."""
        p = svc.personalizer
        if user_id not in p.known_users:
            raise HTTPException(404, f"unknown user {user_id!r}: no history in the log")
        _require_item(svc, reference_item_id)
        method = svc.batch_key(svc.experiment.assign(user_id), None).method

        def work():
            ref, _, _ = p._reference_vectors([reference_item_id], [None])
            return p.preference_embeddings([user_id], ref, method)

        _, weights, fallback = await run_in_threadpool(work)
        return PreferenceResponse(
            user_id=user_id, reference_item_id=reference_item_id, method=method, fallback=fallback[0],
            history_size=len(weights[0]),
            top=[_history_out(h) for h in weights[0][:top]])

    @app.post("/v1/feedback", response_model=FeedbackResponse, tags=["feedback"],
              responses={**ERRORS, 409: {"description": "idempotency key reused with another body", **ERR}})
    async def post_feedback(body: FeedbackRequest, request: Request,
                            svc: Service = Depends(get_service)) -> FeedbackResponse:
        """Idempotent: the same key and body again returns the stored row with duplicate=true."""
        try:
            row = await run_in_threadpool(svc.store.record_feedback, idempotency_key=body.idempotency_key,
                                          request_id=body.request_id, image_index=body.image_index, event=body.event)
        except UnknownRequest as e:
            raise HTTPException(404, str(e).strip("'\"")) from None
        except FeedbackConflict as e:
            raise HTTPException(409, str(e)) from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        request.state.arm = row.arm
        if not row.duplicate:
            svc.metrics.events.labels(row.arm, body.event).inc()
        return FeedbackResponse(feedback_id=row.id, request_id=row.request_id, image_index=row.image_index,
                                event=row.event, duplicate=row.duplicate)

    @app.post("/v1/judgments", response_model=JudgmentResponse, tags=["judgments"], responses=ERRORS)
    async def post_judgment(body: JudgmentRequest, svc: Service = Depends(get_service)) -> JudgmentResponse:
        """A person's choice between the two candidates of a /v1/compare pair."""
        if body.request_a == body.request_b:
            raise HTTPException(400, "a judgment compares two different requests")
        try:
            jid, dup = await run_in_threadpool(
                svc.store.record_judgment, idempotency_key=body.idempotency_key, request_a=body.request_a,
                request_b=body.request_b, preference_choice=body.preference_choice,
                identity_choice=body.identity_choice, rater=body.rater)
        except UnknownRequest as e:
            raise HTTPException(404, str(e).strip("'\"")) from None
        return JudgmentResponse(judgment_id=jid, duplicate=dup)

    @app.get("/v1/experiments", response_model=list[ExperimentOut], tags=["experiments"])
    async def experiments(svc: Service = Depends(get_service)) -> list[ExperimentOut]:
        return [ExperimentOut(name=e.name, salt=e.salt, active=e.active, description=e.description,
                              arms=[{"name": a.name, "share": a.share,
                                     "settings": a.settings.model_dump(exclude_none=True)} for a in e.arms])
                for e in svc.experiments.experiments]

    def _experiment(svc: Service, name: str):
        try:
            return svc.experiments.get(name)
        except KeyError as e:
            raise HTTPException(404, e.args[0]) from None

    @app.get("/v1/experiments/{name}/report", response_model=ExperimentReport, tags=["experiments"], responses=ERRORS)
    async def report(name: str, svc: Service = Depends(get_service)) -> ExperimentReport:
        """Per-arm rates, lifts with 95% intervals, p-values and the sample-ratio-mismatch check."""
        exp = _experiment(svc, name)
        ex, fb = await run_in_threadpool(lambda: (svc.store.exposures_frame(exp.name), svc.store.feedback_frame()))
        return ExperimentReport(**experiment_report(exp, ex, fb))

    @app.get("/v1/experiments/{name}/assignments/{user_id}", response_model=AssignmentOut, tags=["experiments"],
             responses={404: {"description": "unknown experiment", **ERR}})
    async def assignment(name: str, user_id: str, svc: Service = Depends(get_service)) -> AssignmentOut:
        exp = _experiment(svc, name)
        return AssignmentOut(experiment=name, user_id=user_id, arm=exp.assign(user_id).name,
                             bucket=exp.bucket(user_id), forced=user_id in exp.allowlist)

    page_html = (STATIC / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    return app
