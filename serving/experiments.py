"""A/B experiments: YAML definitions, deterministic sticky assignment, arm settings.

Assignment hashes ``salt:user_id`` (SHA-256) into 10,000 buckets and walks the arms' cumulative
shares. It depends on nothing but the salt, the user and the shares, so it is the same across
restarts, processes and machines without storing anything; changing the salt reshuffles everyone
(start a new experiment that way), changing the shares only moves the buckets at the boundaries.
An allowlist forces named users into an arm (QA accounts, the team's own ids).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.yamlfile import read_model

BUCKETS = 10_000


class ArmSettings(BaseModel):
    """Generation settings one arm uses; anything left out comes from the service's config."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["ragar", "uniform", "recency", "reference-only"] | None = None
    n: int | None = Field(None, ge=1)
    tradeoff: float | None = Field(None, ge=0, le=1)
    reference_guidance_scale: float | None = Field(None, ge=0)
    preference_guidance_scale: float | None = Field(None, ge=0)
    num_inference_steps: int | None = Field(None, ge=1)
    generator: str | None = Field(None, description="a generator under the models dir (e.g. rank task on/off); "
                                  "default: the service's generator")


class Plan(BaseModel):
    """What the experiment is sized for: the effect on clicks per exposure worth detecting."""

    model_config = ConfigDict(extra="forbid")
    mde: float = Field(0.02, description="minimum detectable effect, absolute (0.02: two points of click rate); "
                       "also the sequential test's mixing scale")
    baseline: float | None = Field(None, gt=0, lt=1, description="the control's click rate (default: as measured)")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0.5, lt=1)
    cuped_rho: float = Field(0.0, ge=0, lt=1, description="expected correlation of the CUPED covariate")

    @model_validator(mode="after")
    def _nonzero(self) -> Plan:
        if self.mde == 0:
            raise ValueError("plan.mde must not be 0")
        return self


class Guardrails(BaseModel):
    """Per-arm limits the report flags when an arm crosses them."""

    model_config = ConfigDict(extra="forbid")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="failed generations / requests")
    max_p95_latency_s: float = Field(60.0, gt=0)
    max_identity_drop: float = Field(0.05, ge=0, description="mean identity of served images below the control's")


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    share: float = Field(gt=0, le=1)
    settings: ArmSettings = Field(default_factory=ArmSettings)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str = Field(min_length=1)
    description: str = ""
    arms: list[Arm] = Field(min_length=1)
    allowlist: dict[str, str] = Field(default_factory=dict, description="user id -> forced arm")
    active: bool = True
    plan: Plan = Field(default_factory=Plan)
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: arm names repeat: {names}")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"experiment {self.name!r}: arm shares sum to {total:g}, not 1")
        bad = {u: a for u, a in self.allowlist.items() if a not in names}
        if bad:
            raise ValueError(f"experiment {self.name!r}: allowlist names unknown arms {bad}")
        return self

    def bucket(self, user_id: str) -> int:
        h = hashlib.sha256(f"{self.salt}:{user_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") % BUCKETS

    def assign(self, user_id: str) -> Arm:
        """The user's arm: the allowlist first, then the hash bucket over cumulative shares."""
        forced = self.allowlist.get(user_id)
        if forced is not None:
            return self.arm(forced)
        b, edge = self.bucket(user_id), 0.0
        for arm in self.arms:
            edge += arm.share * BUCKETS
            if b < round(edge):
                return arm
        return self.arms[-1]

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"experiment {self.name!r} has no arm {name!r}")


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiments: list[Experiment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ExperimentsFile:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names repeat: {names}")
        if sum(e.active for e in self.experiments) > 1:
            raise ValueError("at most one experiment may be active: a request is assigned to one experiment")
        return self

    def get(self, name: str) -> Experiment:
        for e in self.experiments:
            if e.name == name:
                return e
        raise KeyError(f"unknown experiment {name!r}; defined: {', '.join(e.name for e in self.experiments)}")


class ExperimentsError(ValueError):
    """An experiments file that does not validate; the message names the file and the key."""


#: what every request runs under when no experiments file is given
DEFAULT = Experiment(name="default", salt="default", arms=[Arm(name="default", share=1.0)])


def load_experiments(path: str | Path | None) -> ExperimentsFile:
    if path is None:
        return ExperimentsFile(experiments=[DEFAULT])
    return read_model(path, ExperimentsFile, ExperimentsError)


def active_experiment(exps: ExperimentsFile) -> Experiment:
    for e in exps.experiments:
        if e.active:
            return e
    return DEFAULT
