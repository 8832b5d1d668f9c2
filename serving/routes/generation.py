"""Generation: ``/v1/generate``, the blind pair ``/v1/compare``, images, and preference weights."""

from __future__ import annotations

import asyncio
import base64
import re
import time

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ragar.generation.personalize import PersonalizedResult
from serving.analysis import finite_or_none
from serving.batching import DeadlineExceeded, Overloaded, QueueFull
from serving.deps import AUTH_ERRORS, ERR, get_service, require
from serving.schemas import (
    CandidateOut,
    CompareRequest,
    CompareResponse,
    CompareSide,
    GenerateRequest,
    GenerateResponse,
    HistoryItemOut,
    PreferenceResponse,
    Timings,
)
from serving.security import Caller, retry_after
from serving.service import Job, Service
from serving.store import StoreUnavailable
from serving.uploads import UploadError, decode_reference

router = APIRouter(tags=["generation"])
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ERRORS = {400: {"description": "bad input", **ERR}, 404: {"description": "unknown id", **ERR},
          503: {"description": "event store down, overloaded or not ready", **ERR}, **AUTH_ERRORS}


def history_out(h) -> HistoryItemOut:
    return HistoryItemOut(item_id=h.item_id, weight=h.weight, similarity=h.similarity, event_type=h.event_type,
                          image_url=f"/v1/items/{h.item_id}/image")


def require_item(svc: Service, item_id: str) -> None:
    if item_id not in svc.item_ids:
        raise HTTPException(404, f"unknown item {item_id!r}: not in the catalog")


def _response(svc: Service, request_id: str, arm: str, res: PersonalizedResult, info, total_s: float,
              pngs: list[bytes] | None) -> GenerateResponse:
    cands = [CandidateOut(index=j, url=f"/v1/images/{request_id}/{j}.png",
                          b64_png=base64.b64encode(pngs[j]).decode() if pngs else None,
                          preference_fit=finite_or_none(c.preference_fit), identity=finite_or_none(c.identity),
                          selection=float(c.selection)) for j, c in enumerate(res.candidates)]
    t = res.timings
    return GenerateResponse(
        request_id=request_id, user_id=res.user_id, experiment=svc.experiment.name, arm=arm, method=res.method,
        reference_item_id=res.reference_item_id, reference_source=res.reference_source, fallback=res.fallback,
        cold_start_ranker=res.cold_start_ranker, seed=res.seed, chosen=res.chosen, candidates=cands,
        history=[history_out(h) for h in res.history[:20]],
        timings=Timings(queue_s=info.queue_s, batch_size=info.size, retrieval_s=t["retrieval_s"],
                        generation_s=t["generation_s"], scoring_s=t["scoring_s"], total_s=total_s))


def _payload(res: PersonalizedResult, info, latency_s: float) -> dict:
    return {"candidates": [{"preference_fit": finite_or_none(c.preference_fit), "identity": finite_or_none(c.identity),
                            "selection": float(c.selection)} for c in res.candidates],
            "history": [[h.item_id, h.weight, h.similarity] for h in res.history[:50]],
            "cold_start_ranker": res.cold_start_ranker, "batch_size": info.size, "latency_s": latency_s}


async def _decode_reference(svc: Service, body: GenerateRequest):
    if (body.reference_item_id is None) == (body.reference_image is None):
        raise HTTPException(400, "give exactly one of reference_item_id and reference_image")
    if body.reference_item_id is not None:
        require_item(svc, body.reference_item_id)
        return None
    try:
        return await run_in_threadpool(decode_reference, body.reference_image, svc.settings.max_upload_bytes)
    except UploadError as e:
        raise HTTPException(e.status, str(e)) from None


async def _await_result(request: Request, svc: Service, fut: asyncio.Future, deadline: float):
    """Wait for the batch, giving up at the deadline (504) or when the client went away (cancelled,
    so a batch that has not started never runs it)."""
    try:
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
    except DeadlineExceeded as e:
        svc.metrics.rejected.labels("deadline").inc()
        raise HTTPException(504, f"generation did not finish within {svc.settings.request_timeout_s:g} s: {e}"
                            ) from None


async def _record_error(svc: Service, arm: str, user_id: str, status: int, reason: str) -> None:
    await run_in_threadpool(svc.store.record_error, experiment=svc.experiment.name, arm=arm, user_id=user_id,
                            status=status, reason=reason)


async def _generate_one(request: Request, svc: Service, caller: Caller, *, user_id: str, arm_name: str, key,
                        job: Job, base64_images: bool) -> GenerateResponse:
    t0 = time.perf_counter()
    deadline = t0 + svc.settings.request_timeout_s
    try:
        fut = svc.batcher.submit(key, job, cost=key.n, deadline=deadline)
    except QueueFull as e:
        svc.metrics.rejected.labels("queue_full").inc()
        raise HTTPException(429, f"too many pending requests: {e}",
                            headers={"Retry-After": str(svc.settings.retry_after_s)}) from None
    except Overloaded as e:
        svc.metrics.rejected.labels("overloaded").inc()
        await _record_error(svc, arm_name, user_id, 503, "overloaded")
        raise HTTPException(503, f"overloaded: {e}", headers={"Retry-After": retry_after(e.wait_s)}) from None
    try:
        res, info = await _await_result(request, svc, fut, deadline)
    except HTTPException as e:
        if e.status_code == 504:
            await _record_error(svc, arm_name, user_id, 504, "timeout")
        raise
    except Exception:  # the generator failed on this batch: a 500 for the guardrails, then the guard's 500
        await _record_error(svc, arm_name, user_id, 500, "generation failed")
        raise
    request_id = svc.new_request_id()
    pngs = await run_in_threadpool(svc.save_images, request_id, res)
    try:  # committed before the response leaves: an acknowledged exposure is in the store
        await run_in_threadpool(
            svc.store.record_exposure, request_id=request_id, experiment=svc.experiment.name, arm=arm_name,
            user_id=user_id, reference_item_id=res.reference_item_id, reference_source=res.reference_source,
            method=res.method, n=len(res.candidates), seed=res.seed, chosen=res.chosen, fallback=res.fallback,
            payload=_payload(res, info, time.perf_counter() - t0), api_key=caller.name)
    except StoreUnavailable as e:
        await run_in_threadpool(svc.drop_images, request_id)
        raise HTTPException(503, str(e), headers={"Retry-After": str(svc.settings.retry_after_s)}) from None
    return _response(svc, request_id, arm_name, res, info, time.perf_counter() - t0,
                     pngs if base64_images else None)


@router.post("/v1/generate", response_model=GenerateResponse,
             responses={**ERRORS, 413: {"description": "upload too large", **ERR},
                        504: {"description": "timed out", **ERR}})
async def generate(body: GenerateRequest, request: Request, caller: Caller = Depends(require("generate")),
                   svc: Service = Depends(get_service)) -> GenerateResponse:
    """N candidates for one user and reference, best first by the arm's trade-off; the exposure
    (arm, scores, weights, the calling key) is committed before this returns."""
    arm = svc.experiment.assign(body.user_id)
    request.state.arm = arm.name
    key = svc.batch_key(arm, body.n)
    if key.n > svc.max_n:  # the same shape as FastAPI's own validation errors
        raise HTTPException(422, [{"type": "less_than_equal", "loc": ["body", "n"], "input": key.n,
                                   "ctx": {"le": svc.max_n},
                                   "msg": f"n={key.n} is above the cap of {svc.max_n} candidates per request"}])
    pixels = await _decode_reference(svc, body)
    job = Job(body.user_id, body.reference_item_id, pixels, svc.new_seed() if body.seed is None else body.seed)
    return await _generate_one(request, svc, caller, user_id=body.user_id, arm_name=arm.name, key=key, job=job,
                               base64_images=body.response_format == "base64")


@router.post("/v1/compare", response_model=CompareResponse, tags=["judgments"],
             responses={**ERRORS, 504: {"description": "timed out", **ERR}})
async def compare(body: CompareRequest, request: Request, caller: Caller = Depends(require("generate")),
                  svc: Service = Depends(get_service)) -> CompareResponse:
    """Two methods, same seed, one candidate each, in random order, labelled A and B only: the
    rating view's blind pair (the store keeps which method made which side)."""
    require_item(svc, body.reference_item_id)
    if body.methods[0] == body.methods[1]:
        raise HTTPException(400, "compare two different methods")
    seed = svc.new_seed() if body.seed is None else body.seed
    base = svc.experiment.assign(body.user_id)
    outs = await asyncio.gather(*[
        _generate_one(request, svc, caller, user_id=body.user_id, arm_name=f"compare:{m}",
                      key=svc.batch_key(base, 1, method=m), job=Job(body.user_id, body.reference_item_id, None, seed),
                      base64_images=False) for m in body.methods])
    if svc.new_seed() % 2:
        outs.reverse()
    a, b = (CompareSide(request_id=o.request_id, url=o.candidates[0].url) for o in outs)
    return CompareResponse(a=a, b=b)


@router.get("/v1/images/{request_id}/{index}.png", response_class=FileResponse,
            responses={404: {"description": "unknown image", **ERR}})
async def image(request_id: str, index: int, svc: Service = Depends(get_service)):
    """A generated candidate. Open like a capability URL: the request id is a random UUID that only
    the caller who made the request was told."""
    if not UUID_RE.match(request_id) or not 0 <= index < 1000:
        raise HTTPException(404, "unknown image")
    path = svc.image_path(request_id, index)
    if not path.is_file():
        raise HTTPException(404, "unknown image")
    return FileResponse(path, media_type="image/png")


@router.get("/v1/users/{user_id}/preference", response_model=PreferenceResponse, responses=ERRORS)
async def preference(user_id: str, reference_item_id: str = Query(min_length=1, max_length=256),
                     top: int = Query(10, ge=1, le=100), _: Caller = Depends(require("generate")),
                     svc: Service = Depends(get_service)) -> PreferenceResponse:
    """The user's history weighted against the reference, heaviest first (what the generator sees)."""
    p = svc.personalizer
    if user_id not in p.known_users:
        raise HTTPException(404, f"unknown user {user_id!r}: no history in the log")
    require_item(svc, reference_item_id)
    method = svc.batch_key(svc.experiment.assign(user_id), None).method

    def work():
        ref, _, _ = p.reference_vectors([reference_item_id], [None])
        return p.preference_embeddings([user_id], ref, method)

    _, weights, fallback = await run_in_threadpool(work)
    return PreferenceResponse(user_id=user_id, reference_item_id=reference_item_id, method=method,
                              fallback=fallback[0], history_size=len(weights[0]),
                              top=[history_out(h) for h in weights[0][:top]])
