"""The world's configuration: every size and behaviour knob, validated by pydantic."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.world.render import CATEGORIES


class WorldConfig(BaseModel):
    """Sizes and simulation parameters of the synthetic world (deterministic by ``seed``)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    image_size: int = Field(64, ge=32, le=256, description="rendered image side in pixels")
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES))
    identities_per_category: int = Field(24, ge=1)
    styles_per_identity: int = Field(4, ge=1, le=48)
    views_per_item: int = Field(4, ge=4)
    distractors_per_item: int = Field(2, ge=0, description="near-identity distractors per item")
    n_users: int = Field(1000, ge=1)
    requests_per_user: float = Field(30.0, gt=0, description="mean browsing requests per user")
    slate_size: int = Field(10, ge=1, le=100)
    in_category_share: float = Field(0.7, ge=0, le=1, description="slate share from the request's category")
    position_bias: float = Field(0.8, ge=0, description="examination probability = (1/(pos+1))**position_bias")
    click_threshold: float = 1.2
    like_threshold: float = 2.4
    utility_sharpness: float = Field(2.0, gt=0)
    days: float = Field(90.0, gt=0)
    start: datetime = datetime(2026, 1, 1)
    user_chunk: int = Field(5000, ge=1, description="users simulated per chunk (bounds memory)")
    workers: int = Field(2, ge=1, description="processes that render images")

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {sorted(CATEGORIES)}")
        if len(set(v)) != len(v) or not v:
            raise ValueError("categories must be a non-empty list without repeats")
        return v

    @model_validator(mode="after")
    def _slate_fits_catalog(self) -> WorldConfig:
        if self.slate_size > self.n_items:
            raise ValueError(f"slate_size {self.slate_size} exceeds the catalog ({self.n_items} items): "
                             "a slate shows distinct items")
        return self

    @property
    def n_items(self) -> int:
        return len(self.categories) * self.identities_per_category * self.styles_per_identity
