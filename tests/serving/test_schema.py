"""Fuzzing the real server: schemathesis draws requests from the OpenAPI schema, and hypothesis
draws hostile bodies and parameters (NaN, infinities, 1e400, huge numbers, lone surrogates, control
characters, huge strings). No 5xx other than the documented 503/504, every error body is JSON that
echoes at most a short excerpt, and every response matches its declared schema."""

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.serving.conftest import KEYS, auth

MAX_ERROR_BYTES = 8_000  # an error never carries the input back in bulk


@pytest.fixture(scope="module")
def server(tiny_personalizer, tiny_models, tmp_path_factory):
    from serving.experiments import load_experiments
    from serving.server import serve_in_thread
    from serving.service import Service
    from serving.settings import ServingSettings
    from serving.store import EventStore

    tmp = tmp_path_factory.mktemp("schema")
    s = ServingSettings(db_url=f"sqlite:///{tmp / 'events.db'}", images_dir=tmp / "images", num_inference_steps=1,
                        data=tiny_models["data"], max_n=3, api_keys=KEYS, max_upload_bytes=200_000)
    store = EventStore(s.db_url)
    store.migrate()
    svc = Service(s, tiny_personalizer, store, load_experiments(None),
                  pl.read_parquet(Path(tiny_models["data"]) / "items.parquet"), Path(s.data))
    with serve_in_thread(svc) as url:
        yield url, svc


def test_api_conforms_to_its_schema(server):
    """Each operation in turn, with hypothesis drawing cases from its schema (schemathesis' strategy
    API; its pytest plugin does not load under this pytest), as an admin key."""
    url, _ = server
    api_schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert len(ops) >= 14
    seen = {}
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call(timeout=60, headers=auth())
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        run()
    assert all(codes for codes in seen.values()) and len(seen) == len(ops)
    assert any(200 in codes for codes in seen.values())


NAN, INF, BIG = object(), object(), object()
RAW = {NAN: "NaN", INF: "Infinity", BIG: "1e400"}
hostile_str = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc"]), min_size=1, max_size=5),  # surrogates
    st.builds(lambda c, k: c * k, st.sampled_from(["a", "\ud800", "\x00", "é"]), st.integers(300, 200_000)),
)
hostile_num = st.one_of(st.sampled_from([NAN, INF, BIG, -(2**200), 2**63, -1, 0, 1.5]),
                        st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False))
hostile = st.one_of(hostile_str, hostile_num, st.none(), st.booleans(), st.lists(st.integers(0, 3), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.none(), max_size=2))
FIELDS = {
    "/v1/generate": ["user_id", "reference_item_id", "reference_image", "n", "seed", "response_format"],
    "/v1/feedback": ["request_id", "user_id", "image_index", "event", "idempotency_key"],
    "/v1/judgments": ["request_a", "request_b", "preference_choice", "identity_choice", "idempotency_key", "rater"],
    "/v1/compare": ["user_id", "reference_item_id", "methods", "seed"],
}


def _dump(value) -> str:
    """JSON text as a hostile client writes it: NaN, Infinity and 1e400 as bare tokens, lone
    surrogates as \\ud800 escapes (valid JSON that Python decodes to unencodable text)."""
    marks = {}

    def sub(v):
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        if any(v is m for m in RAW):
            marks[f"__raw{len(marks)}__"] = RAW[v]
            return list(marks)[-1]
        return v

    text = json.dumps(sub(value))
    for k, raw in marks.items():
        text = text.replace(f'"{k}"', raw)
    return text


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code in (503, 504), (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert len(r.content) <= MAX_ERROR_BYTES, (r.status_code, len(r.content))
        json.loads(r.content)  # valid JSON in valid UTF-8


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_hostile_bodies_get_a_4xx_and_never_a_5xx(server, path):
    url, _ = server
    with httpx.Client(base_url=url, timeout=60, headers={**auth("app"), "content-type": "application/json"}) as c:
        @given(body=st.fixed_dictionaries({}, optional={f: hostile for f in FIELDS[path]}))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(body):
            _check(c.post(path, content=_dump(body).encode("utf-8", "surrogatepass")))

        run()


def test_hostile_path_and_query_values(server):
    url, svc = server
    item = svc.items["item_id"][0]
    with httpx.Client(base_url=url, timeout=60, headers=auth()) as c:
        @given(v=hostile_str)
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(v):
            q = quote(v[:600].encode("utf-8", "surrogatepass"), safe="")  # httpx refuses longer URLs
            for path in (f"/v1/users/{q}/preference?reference_item_id={q}", f"/v1/users/u/preference?reference_"
                         f"item_id={item}&top={q}", f"/v1/items?limit={q}&category={q}", f"/v1/items/{q}/image",
                         f"/v1/images/{q}/0.png", f"/v1/experiments/{q}/report",
                         f"/v1/experiments/{q}/assignments/{q}"):
                _check(c.get(path))

        run()


@pytest.mark.parametrize("field,raw", [("n", "NaN"), ("n", "Infinity"), ("seed", "-Infinity"), ("seed", "1e400"),
                                       ("user_id", '"\\ud800"'), ("user_id", '"a\\u0000b"')])
def test_each_value_from_the_issue_is_a_422_with_a_short_safe_body(server, field, raw):
    url, svc = server
    body = {"user_id": "u", "reference_item_id": svc.items["item_id"][0], "n": 1}
    text = json.dumps(body).replace(f'"{field}": ' + json.dumps(body.get(field)), f'"{field}": {raw}') \
        if field in body else json.dumps(body)[:-1] + f', "{field}": {raw}}}'
    r = httpx.post(f"{url}/v1/generate", content=text.encode(), timeout=60,
                   headers={**auth("app"), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", field]


def test_feedback_and_judgment_strings_with_surrogates(server):
    url, _ = server
    for path, body in [("/v1/feedback", '{"request_id": "\\ud800", "user_id": "u", "image_index": 0, "event": "like",'
                                        ' "idempotency_key": "k-00000001"}'),
                       ("/v1/judgments", '{"request_a": "a", "request_b": "b", "preference_choice": "a", '
                                         '"identity_choice": "b", "idempotency_key": "k-00000001", '
                                         '"rater": "\\udfff"}')]:
        r = httpx.post(f"{url}{path}", content=body.encode(), headers={**auth(), "content-type": "application/json"})
        assert r.status_code == 422 and "\\ud" in r.text, r.text
