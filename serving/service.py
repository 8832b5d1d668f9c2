"""The state one API process holds: models, store, experiments, batcher, metrics.

Built in the app's lifespan (:func:`build_service`), or handed in ready-made by tests and the
simulator. Everything an endpoint needs comes from here through ``Depends(get_service)``.
"""

from __future__ import annotations

import copy
import io
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from ragar.generation.personalize import PersonalizedResult, Personalizer
from ragar.runtime import CPU, Runtime
from serving.analysis import pre_period_click_rate
from serving.batching import MicroBatcher
from serving.experiments import Arm, Experiment, ExperimentsFile, active_experiment, load_experiments
from serving.metrics import ServiceMetrics
from serving.settings import ServingSettings
from serving.store import EventStore


@dataclass(frozen=True)
class BatchKey:
    """Requests with equal keys can share one generator call."""

    generator: str | None
    method: str
    n: int
    tradeoff: float | None
    reference_guidance_scale: float | None
    preference_guidance_scale: float | None
    num_inference_steps: int | None


@dataclass
class Job:
    user_id: str
    reference_item_id: str | None
    reference_pixels: np.ndarray | None
    seed: int


def models_layout(models: Path | None) -> tuple[Path | None, Path | None]:
    """(generator dir or None for the shipped one, rankers dir or None) of a ``--models`` directory."""
    if models is None:
        return None, None
    models = Path(models)
    if not models.is_dir():
        raise FileNotFoundError(f"--models {models}: no such directory")
    rankers = models / "rankers" if (models / "rankers").is_dir() else models
    if not (rankers / "rankers.json").exists():
        rankers = None
    generator = models / "generator" if (models / "generator" / "unet").is_dir() else None
    return generator, rankers


def image_path(images_dir: Path, request_id: str, index: int) -> Path:
    """Where candidate ``index`` of a request is kept (two-level fan-out keeps directories small)."""
    return Path(images_dir) / request_id[:2] / request_id / f"{index}.png"


class Service:
    def __init__(self, settings: ServingSettings, personalizer: Personalizer, store: EventStore,
                 experiments: ExperimentsFile, items: pl.DataFrame, data_root: Path | None = None,
                 runtime: Runtime = CPU):
        self.settings = settings
        self.runtime = runtime
        self.personalizer = personalizer
        self.store = store
        self.experiments = experiments
        self.experiment: Experiment = active_experiment(experiments)
        self.items = items
        self.item_ids = personalizer.positions  # the catalog the personalizer can condition on
        self.data_root = data_root
        self.metrics = ServiceMetrics()
        self.metrics.describe_device(runtime)
        self.max_n = min(settings.max_n, personalizer.config.max_n)
        self._variants: dict[str | None, Personalizer] = {None: personalizer}
        size, wait_s, queue = settings.batching(runtime.is_cuda)
        self.batcher = MicroBatcher(self._run_batch, max_batch_size=size, max_wait_s=wait_s, queue_size=queue,
                                    on_batch=self.metrics.observe_batch, on_depth=self.metrics.queue_depth.set,
                                    on_busy=self.metrics.busy.set)
        self.images_dir = Path(settings.images_dir)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.ready = False
        counts = personalizer.interactions.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
        self.users = counts
        self.covariates = pre_period_click_rate(personalizer.interactions)  # CUPED's, per user

    # --- models per arm -----------------------------------------------------------------------

    def variant(self, generator: str | None) -> Personalizer:
        """The personalizer with another generator (an arm's setting), sharing catalog, log and rankers."""
        if generator not in self._variants:
            from ragar.generation.pipeline import RagarPipeline

            root = Path(self.settings.models or ".")
            path = root / generator
            if not (path / "unet").is_dir():
                raise FileNotFoundError(f"arm generator {generator!r}: no generator at {path}")
            p = copy.copy(self.personalizer)
            p.pipeline = RagarPipeline.from_pretrained(path, torch_dtype=self.runtime.dtype).to(self.runtime.device)
            p.pipeline.set_progress_bar_config(disable=True)
            self._variants[generator] = p
        return self._variants[generator]

    def load_arm_models(self) -> None:
        for e in self.experiments.experiments:
            for arm in e.arms:
                self.variant(arm.settings.generator)

    def batch_key(self, arm: Arm, n: int | None, method: str | None = None) -> BatchKey:
        s = arm.settings
        cfg = self.personalizer.config
        return BatchKey(s.generator, method or s.method or cfg.method, n or s.n or cfg.n, s.tradeoff,
                        s.reference_guidance_scale, s.preference_guidance_scale,
                        s.num_inference_steps or self.settings.num_inference_steps)

    def _run_batch(self, key: BatchKey, jobs: list[Job]) -> list[PersonalizedResult]:
        p = self.variant(key.generator)
        return p([j.user_id for j in jobs], [j.reference_item_id for j in jobs],
                 [j.reference_pixels for j in jobs], n=key.n, method=key.method, seed=[j.seed for j in jobs],
                 tradeoff=key.tradeoff, num_inference_steps=key.num_inference_steps,
                 reference_guidance_scale=key.reference_guidance_scale,
                 preference_guidance_scale=key.preference_guidance_scale)

    # --- images ---------------------------------------------------------------------------------

    @staticmethod
    def new_request_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def new_seed() -> int:
        return random.SystemRandom().randrange(0, 2**31 - 1)

    def image_path(self, request_id: str, index: int) -> Path:
        return image_path(self.images_dir, request_id, index)

    def save_images(self, request_id: str, result: PersonalizedResult) -> list[bytes]:
        out = []
        for j, c in enumerate(result.candidates):
            buf = io.BytesIO()
            Image.fromarray(c.image).save(buf, format="PNG")
            path = self.image_path(request_id, j)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.getvalue())
            out.append(buf.getvalue())
        return out

    def drop_images(self, request_id: str) -> None:
        d = self.image_path(request_id, 0).parent
        for f in d.glob("*.png"):
            f.unlink(missing_ok=True)
        if d.exists():
            d.rmdir()

    def item_image(self, item_id: str) -> Path | None:
        return (Path(p) if (p := self.personalizer.reference_images.get(item_id)) else None)


def build_service(settings: ServingSettings) -> Service:
    """Load everything named by the settings (the lifespan's work): config, models, store, experiments."""
    from ragar.config import load_config
    from ragar.generation.loading import personalizer_from_config

    if settings.data is None:
        raise ValueError("no dataset: set RAGAR_DATA or pass --data")
    cfg = load_config(settings.config)
    runtime = Runtime.from_config(cfg.runtime, settings.device, settings.dtype)
    experiments = load_experiments(settings.experiments)
    generator, rankers = models_layout(settings.models)
    p = personalizer_from_config(cfg, settings.data, generator, rankers, runtime=runtime)
    store = EventStore(settings.db_url)
    store.migrate()
    items = pl.read_parquet(Path(settings.data) / "items.parquet")
    return Service(settings, p, store, experiments, items, Path(settings.data), runtime)
