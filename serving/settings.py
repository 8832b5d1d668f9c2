"""Service settings from the environment (``RAGAR_*``), so one image runs anywhere.

Every field can be set as ``RAGAR_<FIELD>`` (``RAGAR_DB_URL``, ``RAGAR_MAX_BATCH_SIZE``, ...);
``ragar serve`` fills the same fields from its flags.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragar.runtime import DEVICE_PATTERN, DtypeName
from serving.security import ApiKeySpec


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGAR_", extra="forbid")

    models: Path | None = Field(None, description="directory with rankers/ (or a rankers dir itself) and an "
                                "optional generator/; the shipped demo generator otherwise")
    data: Path | None = Field(None, description="the dataset: items, images and the interaction log")
    config: str = Field("demo", description="the ragar config (name or YAML path) for encoders and generation")
    db_url: str = Field("sqlite:///runs/serve/events.db", description="SQLAlchemy URL of the event store")
    experiments: Path | None = Field(None, description="experiments YAML; without it every request is arm 'default'")
    images_dir: Path = Field(Path("runs/serve/images"), description="where generated PNGs are kept and served from")
    device: str | None = Field(None, pattern=DEVICE_PATTERN, description="where the models "
                               "run: auto | cpu | cuda | cuda:N (default: the config's runtime.device)")
    dtype: DtypeName | None = Field(None, description="what they compute "
                              "in (default: the config's runtime.dtype)")
    max_batch_size: int | None = Field(None, ge=1, description="requests grouped into one generator call "
                                       "(default: 8 on the CPU, 64 on a GPU)")
    max_wait_ms: float | None = Field(None, ge=0, description="how long the first request of a batch waits for "
                                      "company (default: 20 ms on the CPU, 10 ms on a GPU)")
    queue_size: int | None = Field(None, ge=1, description="pending requests beyond which the API answers 429 "
                                   "(default: 64 on the CPU, 1024 on a GPU)")
    request_timeout_s: float = Field(60.0, gt=0, description="a request still waiting after this gets 504")
    max_n: int = Field(8, ge=1, description="the cap on candidates per request")
    max_upload_bytes: int = Field(5_000_000, ge=1024, description="largest accepted reference upload")
    num_inference_steps: int | None = Field(None, ge=1, description="override the config's sampler steps")
    retry_after_s: int = Field(1, ge=1, description="the Retry-After of a 429 or a 503")
    max_body_bytes: int | None = Field(None, ge=1024, description="largest request body, refused with 413 while "
                                       "it is read (default: room for the largest upload in base64)")
    # --- who may call what (serving/security.py) ---
    api_keys_file: Path | None = Field(None, description="YAML with the accepted keys' hashes and scopes "
                                       "(`ragar keys create` writes it)")
    api_keys: list[ApiKeySpec] = Field(default_factory=list, description="more keys, as JSON (RAGAR_API_KEYS)")
    rate_per_s: float = Field(20.0, gt=0, description="a key's sustained requests per second, unless it says")
    rate_burst: int = Field(40, ge=1, description="a key's burst, unless it says")
    demo: bool = Field(False, description="demo mode: the try-it page gets a generated key (generate, feedback, "
                       "report); never on a network others can reach")
    metrics_open: bool = Field(False, description="serve /metrics without a key (a trusted scrape network)")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; none by default")

    def batching(self, on_gpu: bool) -> tuple[int, float, int]:
        """(max batch size, max wait in seconds, queue bound): the settings', else the device's
        defaults (:data:`serving.batching.GPU_BATCHING` / ``CPU_BATCHING``)."""
        from serving.batching import CPU_BATCHING, GPU_BATCHING

        size, wait_s, queue = GPU_BATCHING if on_gpu else CPU_BATCHING
        return (self.max_batch_size or size, wait_s if self.max_wait_ms is None else self.max_wait_ms / 1000,
                self.queue_size or queue)

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or self.max_upload_bytes * 4 // 3 + 64 * 1024
