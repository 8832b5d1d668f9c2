"""Service settings from the environment (``RAGAR_*``), so one image runs anywhere.

Every field can be set as ``RAGAR_<FIELD>`` (``RAGAR_DB_URL``, ``RAGAR_MAX_BATCH_SIZE``, ...);
``ragar serve`` fills the same fields from its flags.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGAR_", extra="forbid")

    models: Path | None = Field(None, description="directory with rankers/ (or a rankers dir itself) and an "
                                "optional generator/; the shipped demo generator otherwise")
    data: Path | None = Field(None, description="the dataset: items, images and the interaction log")
    config: str = Field("demo", description="the ragar config (name or YAML path) for encoders and generation")
    db_url: str = Field("sqlite:///runs/serve/events.db", description="SQLAlchemy URL of the event store")
    experiments: Path | None = Field(None, description="experiments YAML; without it every request is arm 'default'")
    images_dir: Path = Field(Path("runs/serve/images"), description="where generated PNGs are kept and served from")
    max_batch_size: int = Field(8, ge=1, description="requests grouped into one generator call")
    max_wait_ms: float = Field(20.0, ge=0, description="how long the first request of a batch waits for company")
    queue_size: int = Field(64, ge=1, description="pending requests beyond which the API answers 429")
    request_timeout_s: float = Field(60.0, gt=0, description="a request still waiting after this gets 504")
    max_n: int = Field(8, ge=1, description="the cap on candidates per request")
    max_upload_bytes: int = Field(5_000_000, ge=1024, description="largest accepted reference upload")
    num_inference_steps: int | None = Field(None, ge=1, description="override the config's sampler steps")
    retry_after_s: int = Field(1, ge=1, description="the Retry-After of a 429 or a 503")
