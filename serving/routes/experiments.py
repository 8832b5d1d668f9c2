"""Experiments: definitions and reports (``report`` scope), salts and assignments (``admin``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from serving.analysis import experiment_report
from serving.deps import AUTH_ERRORS, ERR, get_service, require
from serving.schemas import AssignmentOut, ExperimentOut, ExperimentReport
from serving.security import Caller
from serving.service import Service

router = APIRouter(tags=["experiments"])
ERRORS = {404: {"description": "unknown experiment", **ERR}, **AUTH_ERRORS}


def _experiment(svc: Service, name: str):
    try:
        return svc.experiments.get(name)
    except KeyError as e:
        raise HTTPException(404, e.args[0]) from None


@router.get("/v1/experiments", response_model=list[ExperimentOut], responses=AUTH_ERRORS)
async def experiments(caller: Caller = Depends(require("report")),
                      svc: Service = Depends(get_service)) -> list[ExperimentOut]:
    """The experiments and their arms; the salt (which would let anyone compute every user's arm)
    only for admin keys."""
    return [ExperimentOut(name=e.name, salt=e.salt if caller.admin else None, active=e.active,
                          description=e.description,
                          arms=[{"name": a.name, "share": a.share,
                                 "settings": a.settings.model_dump(exclude_none=True)} for a in e.arms])
            for e in svc.experiments.experiments]


@router.get("/v1/experiments/{name}/report", response_model=ExperimentReport,
            responses={**ERRORS, 400: {"description": "a single-arm experiment: nothing to compare", **ERR}})
async def report(name: str, _: Caller = Depends(require("report")),
                 svc: Service = Depends(get_service)) -> ExperimentReport:
    """User-level clicks per exposure with CUPED and an always-valid interval, the decision, the
    plan's progress, guardrails, the per-exposure view and the sample-ratio-mismatch check."""
    exp = _experiment(svc, name)
    data = await run_in_threadpool(svc.store.experiment_data, exp.name, svc.covariates)
    try:
        rep = await run_in_threadpool(experiment_report, exp, data)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return ExperimentReport(**rep)


@router.get("/v1/experiments/{name}/assignments/{user_id}", response_model=AssignmentOut, responses=ERRORS)
async def assignment(name: str, user_id: str, _: Caller = Depends(require("admin")),
                     svc: Service = Depends(get_service)) -> AssignmentOut:
    exp = _experiment(svc, name)
    return AssignmentOut(experiment=name, user_id=user_id, arm=exp.assign(user_id).name,
                         bucket=exp.bucket(user_id), forced=user_id in exp.allowlist)
