"""Serving fixtures: a Service over the tiny personalizer, served by real uvicorn on loopback."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from serving.security import ApiKeySpec, hash_token, new_token

#: the keys every test service accepts: a backend key (generate + feedback), a second backend (to
#: try another key's requests), a reporting key and an admin; tokens made fresh for each test run
TOKENS = {"app": new_token(), "other": new_token(), "reporter": new_token(), "admin": new_token()}
SCOPES = {"app": ["generate", "feedback"], "other": ["generate", "feedback"], "reporter": ["report"],
          "admin": ["admin"]}
KEYS = [ApiKeySpec(name=n, sha256=hash_token(t), scopes=SCOPES[n], rate_per_s=1000, burst=1000)
        for n, t in TOKENS.items()]


def auth(name: str = "admin") -> dict[str, str]:
    """The Authorization header of one of the test keys."""
    return {"Authorization": f"Bearer {TOKENS[name]}"}

EXPERIMENTS_YAML = """
experiments:
  - name: weighting
    salt: s1
    description: RAGAR weighting against uniform weighting
    arms:
      - name: uniform
        share: 0.5
        settings: {method: uniform}
      - name: ragar
        share: 0.5
        settings: {method: ragar}
    allowlist: {qa-user: ragar}
"""


@pytest.fixture
def experiments_file(tmp_path) -> Path:
    p = tmp_path / "experiments.yaml"
    p.write_text(EXPERIMENTS_YAML)
    return p


@pytest.fixture
def make_service(tiny_personalizer, tiny_models, tmp_path, experiments_file):
    from serving.experiments import load_experiments
    from serving.service import Service
    from serving.settings import ServingSettings
    from serving.store import EventStore

    def make(db_url: str | None = None, experiments: Path | None = experiments_file, **kw) -> Service:
        s = ServingSettings(db_url=db_url or f"sqlite:///{tmp_path / 'events.db'}", images_dir=tmp_path / "images",
                            experiments=experiments, num_inference_steps=kw.pop("num_inference_steps", 2),
                            data=tiny_models["data"], api_keys=kw.pop("api_keys", KEYS), **kw)
        store = EventStore(s.db_url)
        store.migrate()
        items = pl.read_parquet(Path(tiny_models["data"]) / "items.parquet")
        return Service(s, tiny_personalizer, store, load_experiments(s.experiments), items, Path(s.data))

    return make


@pytest.fixture
def live(make_service):
    """``with live() as (url, service):`` a real server on a free loopback port."""
    from contextlib import contextmanager

    from serving.server import serve_in_thread

    @contextmanager
    def run(**kw):
        svc = make_service(**kw)
        with serve_in_thread(svc) as url:
            yield url, svc

    return run
