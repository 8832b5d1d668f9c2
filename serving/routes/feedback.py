"""Feedback and judgments, each bound to the request it names: the key that made the request (or
an admin key) and, for feedback, the user it was for."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from serving.deps import AUTH_ERRORS, ERR, get_service, require
from serving.schemas import FeedbackRequest, FeedbackResponse, JudgmentRequest, JudgmentResponse
from serving.security import Caller
from serving.service import Service
from serving.store import FeedbackConflict, NotYours, UnknownRequest

router = APIRouter()
ERRORS = {400: {"description": "bad input", **ERR}, 404: {"description": "unknown request", **ERR},
          409: {"description": "idempotency key reused with another body", **ERR},
          503: {"description": "event store down or not ready", **ERR}, **AUTH_ERRORS}


def _store_errors(e: Exception) -> HTTPException:
    if isinstance(e, UnknownRequest):
        return HTTPException(404, str(e).strip("'\""))
    if isinstance(e, NotYours):
        return HTTPException(403, str(e))
    if isinstance(e, FeedbackConflict):
        return HTTPException(409, str(e))
    return HTTPException(400, str(e))


@router.post("/v1/feedback", response_model=FeedbackResponse, tags=["feedback"], responses=ERRORS)
async def post_feedback(body: FeedbackRequest, request: Request, caller: Caller = Depends(require("feedback")),
                        svc: Service = Depends(get_service)) -> FeedbackResponse:
    """Idempotent: the same key and body again returns the stored row with duplicate=true; the same
    key with another body is a 409."""
    try:
        row = await run_in_threadpool(svc.store.record_feedback, idempotency_key=body.idempotency_key,
                                      request_id=body.request_id, image_index=body.image_index, event=body.event,
                                      api_key=None if caller.admin else caller.name, user_id=body.user_id)
    except (UnknownRequest, NotYours, FeedbackConflict, ValueError) as e:
        raise _store_errors(e) from None
    request.state.arm = row.arm
    if not row.duplicate:
        svc.metrics.events.labels(row.arm, body.event).inc()
    return FeedbackResponse(feedback_id=row.id, request_id=row.request_id, image_index=row.image_index,
                            event=row.event, duplicate=row.duplicate)


@router.post("/v1/judgments", response_model=JudgmentResponse, tags=["judgments"], responses=ERRORS)
async def post_judgment(body: JudgmentRequest, caller: Caller = Depends(require("feedback")),
                        svc: Service = Depends(get_service)) -> JudgmentResponse:
    """A person's choice between the two sides of a /v1/compare pair; idempotent like feedback."""
    if body.request_a == body.request_b:
        raise HTTPException(400, "a judgment compares two different requests")
    try:
        jid, dup = await run_in_threadpool(
            svc.store.record_judgment, idempotency_key=body.idempotency_key, request_a=body.request_a,
            request_b=body.request_b, preference_choice=body.preference_choice,
            identity_choice=body.identity_choice, rater=body.rater, api_key=None if caller.admin else caller.name)
    except (UnknownRequest, NotYours, FeedbackConflict, ValueError) as e:
        raise _store_errors(e) from None
    return JudgmentResponse(judgment_id=jid, duplicate=dup)
