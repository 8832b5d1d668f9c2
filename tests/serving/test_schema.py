"""schemathesis generates requests from the OpenAPI schema against the real server: no 5xx except
the documented 503/504, and every response matches its declared schema."""

from pathlib import Path

import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance


@pytest.fixture(scope="module")
def api_schema(tiny_personalizer, tiny_models, tmp_path_factory):
    from serving.experiments import load_experiments
    from serving.server import serve_in_thread
    from serving.service import Service
    from serving.settings import ServingSettings
    from serving.store import EventStore

    tmp = tmp_path_factory.mktemp("schema")
    s = ServingSettings(db_url=f"sqlite:///{tmp / 'events.db'}", images_dir=tmp / "images", num_inference_steps=1,
                        data=tiny_models["data"], max_n=3)
    store = EventStore(s.db_url)
    store.migrate()
    svc = Service(s, tiny_personalizer, store, load_experiments(None),
                  pl.read_parquet(Path(tiny_models["data"]) / "items.parquet"), Path(s.data))
    with serve_in_thread(svc) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_api_conforms_to_its_schema(api_schema):
    """Each operation in turn, with hypothesis drawing cases from its schema (schemathesis' strategy
    API; its pytest plugin does not load under this pytest)."""
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert len(ops) >= 14
    seen = {}
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call(timeout=60)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        run()
    assert all(codes for codes in seen.values()) and len(seen) == len(ops)
