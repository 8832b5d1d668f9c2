"""Request and response models of the API: typed, so the OpenAPI schema is exact."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["ragar", "uniform", "recency", "reference-only"]
#: user and item ids: printable text (no control characters: they end up in logs and the store)
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
RequestId = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ErrorOut(BaseModel):
    detail: str = Field(description="what was wrong, in words")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    reference_item_id: Id | None = Field(None, description="a catalog item; or give reference_image")
    reference_image: str | None = Field(None, description="the reference as an image file (PNG, JPEG, WebP, ...) "
                                        "in base64, standard or URL-safe, line breaks allowed, optionally a "
                                        "data:image/...;base64, URI; instead of reference_item_id")
    n: int | None = Field(None, ge=1, description="candidates; default the arm's, capped by the service")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="default: a random seed, returned")
    response_format: Literal["url", "base64"] = "url"


class CandidateOut(BaseModel):
    index: int
    url: str
    b64_png: str | None = None
    preference_fit: float | None = Field(description="ranker click probability for this user (null: no ranker)")
    identity: float | None = Field(description="cosine to the reference in the identity encoder's space")
    selection: float = Field(description="the best-of-N trade-off score")


class HistoryItemOut(BaseModel):
    item_id: str
    weight: float
    similarity: float
    event_type: str
    image_url: str


class Timings(BaseModel):
    queue_s: float
    batch_size: int
    retrieval_s: float
    generation_s: float
    scoring_s: float
    total_s: float


class GenerateResponse(BaseModel):
    request_id: str
    user_id: str
    experiment: str
    arm: str
    method: str
    reference_item_id: str | None
    reference_source: str
    fallback: str | None = Field(description="unknown-user / empty-history / all-below-floor: conditioned on the "
                                 "reference alone")
    cold_start_ranker: bool
    seed: int
    chosen: int
    candidates: list[CandidateOut]
    history: list[HistoryItemOut]
    timings: Timings


class PreferenceResponse(BaseModel):
    user_id: str
    reference_item_id: str
    method: str
    fallback: str | None
    history_size: int
    top: list[HistoryItemOut]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: RequestId
    user_id: Id = Field(description="the user the request was made for (feedback for another user is refused)")
    image_index: int = Field(ge=0)
    event: Literal["click", "like", "skip"]
    idempotency_key: str = Field(min_length=8, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")


class FeedbackResponse(BaseModel):
    feedback_id: int
    request_id: str
    image_index: int
    event: str
    duplicate: bool = Field(description="true when this idempotency key was already stored (nothing new written)")


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    reference_item_id: Id
    methods: tuple[Method, Method] = ("ragar", "uniform")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class CompareSide(BaseModel):
    """One side of a blind pair: the image and the request to name in the judgment, nothing that
    says which method or arm made it (the server keeps that)."""

    request_id: str
    url: str


class CompareResponse(BaseModel):
    """Two single-candidate requests, same seed, in random order, labelled A and B only."""

    a: CompareSide
    b: CompareSide


class JudgmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_a: RequestId
    request_b: RequestId
    preference_choice: Literal["a", "b"] = Field(description="which fits the user better")
    identity_choice: Literal["a", "b"] = Field(description="which keeps the reference's identity better")
    idempotency_key: str = Field(min_length=8, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    rater: str | None = Field(None, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")


class JudgmentResponse(BaseModel):
    judgment_id: int
    duplicate: bool


class ArmOut(BaseModel):
    name: str
    share: float
    settings: dict


class ExperimentOut(BaseModel):
    name: str
    salt: str | None = Field(description="the assignment salt; shown to admin keys only")
    active: bool
    description: str
    arms: list[ArmOut]


class AssignmentOut(BaseModel):
    experiment: str
    user_id: str
    arm: str
    bucket: int
    forced: bool


class ArmReport(BaseModel):
    arm: str
    exposures: int
    users: int
    clicks: int
    likes: int
    click_rate: float | None
    like_rate: float | None
    click_lift_abs: float | None = None
    click_lift_abs_ci95: tuple[float, float] | None = None
    click_lift_rel: float | None = None
    click_lift_rel_ci95: tuple[float, float] | None = None
    click_p_value: float | None = None
    like_lift_abs: float | None = None
    like_lift_abs_ci95: tuple[float, float] | None = None
    like_lift_rel: float | None = None
    like_lift_rel_ci95: tuple[float, float] | None = None
    like_p_value: float | None = None


Interval = tuple[float, float] | None


class UserLevelRow(BaseModel):
    """One treatment arm against the control on one metric, users as units (serving/abstats.py)."""

    arm: str
    metric: Literal["click", "like"]
    users: int
    rate: float | None = Field(description="events per exposure in this arm")
    diff: float | None = Field(None, description="treatment minus control, delta method")
    ci95: Interval = None
    p_value: float | None = None
    var: float | None = None
    cuped_diff: float | None = None
    cuped_ci95: Interval = None
    cuped_p_value: float | None = None
    cuped_var: float | None = None
    variance_reduction: float | None = Field(None, description="1 - Var(CUPED) / Var(raw)")
    seq_ci95: Interval = Field(None, description="always-valid (mixture SPRT) interval; valid at any look")
    seq_p_value: float | None = None


class PlanOut(BaseModel):
    mde: float
    baseline: float | None
    alpha: float
    power: float
    cuped_rho: float
    users_per_arm_needed: int | None
    users_per_arm_now: int
    progress: float | None = Field(description="users now / users needed (the smallest arm)")
    achieved_power: float | None = Field(description="power against the planned effect at the measured variance")
    users_still_needed: int | None = Field(description="more users per arm for the planned power, measured variance")
    observed_effect: float | None = Field(None, description="the first treatment's primary lift so far")
    users_still_needed_for_observed: int | None = Field(None, description="more users per arm for the planned "
                                                        "power against the observed effect")


class GuardrailOut(BaseModel):
    arm: str
    errors: int
    error_rate: float | None
    p95_latency_s: float | None
    identity: float | None = Field(description="mean identity score of the images served")
    breaches: list[str]


class Look(BaseModel):
    exposures: int
    users: int
    at: str
    diff: float | None
    ci95: Interval
    seq_ci95: Interval
    seq_p_value: float | None


class ExperimentReport(BaseModel):
    experiment: str
    control: str
    total_exposures: int
    arms: list[ArmReport] = Field(description="per-exposure view (exposures taken as independent)")
    srm_chi2: float | None
    srm_p_value: float | None
    srm_detected: bool
    unit: Literal["user"]
    primary_metric: str
    cuped: bool = Field(description="whether a pre-experiment covariate adjusted the user-level estimates")
    sequential_tau: float = Field(description="the mixing scale of the sequential test (the plan's mde)")
    user_level: list[UserLevelRow]
    decision: dict[str, str] = Field(description="per treatment arm, on the primary metric's always-valid p")
    plan: PlanOut
    guardrails: list[GuardrailOut]
    timeline: list[Look] = Field(description="the primary comparison at successive looks")


class UserOut(BaseModel):
    user_id: str
    events: int


class ItemOut(BaseModel):
    item_id: str
    category: str
    title: str | None
    image_url: str
