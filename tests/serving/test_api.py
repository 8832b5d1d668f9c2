"""Every endpoint and every bad input, over real HTTP (uvicorn on a loopback port)."""

import base64
import io
import threading

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.serving.conftest import auth


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def api(live):
    with live() as (url, svc), httpx.Client(base_url=url, timeout=60, headers=auth("app")) as c:
        c.svc = svc
        c.user = svc.users["user_id"][0]
        c.item = svc.items["item_id"][0]
        yield c


def _generate(c, **kw):
    body = {"user_id": c.user, "reference_item_id": c.item, "n": 2, "seed": 1, **kw}
    return c.post("/v1/generate", json=body)


def test_ops_endpoints(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}
    schema = api.get("/openapi.json").json()
    assert {"/v1/generate", "/v1/feedback", "/v1/experiments", "/v1/experiments/{name}/report",
            "/v1/users/{user_id}/preference", "/v1/judgments", "/v1/compare"} <= set(schema["paths"])
    assert "GenerateResponse" in schema["components"]["schemas"]


def test_generate_records_the_exposure_before_answering(api):
    r = _generate(api, response_format="base64")
    assert r.status_code == 200, r.text
    g = r.json()
    assert len(g["candidates"]) == 2 and g["seed"] == 1 and g["experiment"] == "weighting"
    assert g["arm"] in ("ragar", "uniform") and g["method"] == g["arm"]
    assert g["history"] and g["history"][0]["weight"] >= g["history"][-1]["weight"]
    row = api.svc.store.exposure(g["request_id"])  # committed by the time the response arrived
    assert row["arm"] == g["arm"] and row["n"] == 2 and row["chosen"] == g["chosen"]
    img = api.get(g["candidates"][0]["url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content == base64.b64decode(g["candidates"][0]["b64_png"])
    again = _generate(api).json()  # same seed, same user: same images and scores
    assert [c["identity"] for c in again["candidates"]] == pytest.approx([c["identity"] for c in g["candidates"]])
    assert api.get(f"/v1/experiments/weighting/assignments/{api.user}", headers=auth()).json()["arm"] == g["arm"]


def test_allowlist_forces_the_arm(api):
    g = api.post("/v1/generate", json={"user_id": "qa-user", "reference_item_id": api.item, "n": 1}).json()
    assert g["arm"] == "ragar" and g["fallback"] == "unknown-user"  # not in the log: reference alone, said so
    assert api.get("/v1/experiments/weighting/assignments/qa-user", headers=auth()).json()["forced"] is True


def test_uploaded_reference(api):
    ref = np.asarray(Image.open(api.svc.item_image(api.item)).convert("RGB"))
    r = api.post("/v1/generate", json={"user_id": api.user, "reference_image": _png(ref), "n": 1})
    assert r.status_code == 200, r.text
    assert r.json()["reference_source"].startswith("upload (text from ")


@pytest.mark.parametrize("body,status,words", [
    ({"reference_item_id": "no-such-item"}, 404, "unknown item"),
    ({"n": 100}, 422, "cap"),
    ({"n": 0}, 422, "greater than or equal"),
    ({"reference_item_id": None}, 400, "exactly one"),
    ({"reference_item_id": None, "reference_image": base64.b64encode(b"not an image").decode()}, 400, "image"),
    ({"reference_item_id": None, "reference_image": "%%% not base64"}, 400, "base64"),
    ({"user_id": ""}, 422, "at least 1"),
    ({"surprise": 1}, 422, "extra"),
])
def test_generate_bad_inputs(api, body, status, words):
    r = _generate(api, **body)
    assert r.status_code == status, r.text
    assert words in r.text.lower()
    assert api.svc.store.exposures_frame().height == 0  # nothing written for a refused request


def test_malformed_json_and_oversized_upload(api):
    r = api.post("/v1/generate", content=b'{"user_id": "u', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.text.lower()
    api.svc.settings.max_upload_bytes = 2048
    big = base64.b64encode(np.random.default_rng(0).bytes(3000)).decode()
    r = _generate(api, reference_item_id=None, reference_image=big)
    assert r.status_code == 413 and "2048" in r.text


def test_preference_endpoint(api):
    r = api.get(f"/v1/users/{api.user}/preference", params={"reference_item_id": api.item, "top": 3})
    assert r.status_code == 200, r.text
    p = r.json()
    assert len(p["top"]) == 3 and p["history_size"] >= 3
    assert sum(h["weight"] for h in p["top"]) <= 1.0 + 1e-5
    assert api.get("/v1/users/nobody/preference", params={"reference_item_id": api.item}).status_code == 404
    assert api.get(f"/v1/users/{api.user}/preference", params={"reference_item_id": "zz"}).status_code == 404
    assert api.get(f"/v1/users/{api.user}/preference").status_code == 422


def test_feedback_paths(api):
    g = _generate(api).json()
    body = {"request_id": g["request_id"], "user_id": api.user, "image_index": 1, "event": "click",
            "idempotency_key": "fb-0000001"}
    first = api.post("/v1/feedback", json=body)
    dup = api.post("/v1/feedback", json=body)
    assert first.status_code == dup.status_code == 200
    assert not first.json()["duplicate"] and dup.json()["duplicate"]
    assert first.json()["feedback_id"] == dup.json()["feedback_id"]
    assert api.post("/v1/feedback", json={**body, "event": "like"}).status_code == 409
    assert api.post("/v1/feedback", json={**body, "request_id": "unknown", "idempotency_key": "fb-2222222"}
                    ).status_code == 404
    assert api.post("/v1/feedback", json={**body, "image_index": 9, "idempotency_key": "fb-3333333"}
                    ).status_code == 400
    assert api.post("/v1/feedback", json={**body, "event": "purchase"}).status_code == 422
    assert api.svc.store.feedback_frame().height == 1
    rep = api.get("/v1/experiments/weighting/report", headers=auth("reporter")).json()
    arm = next(a for a in rep["arms"] if a["arm"] == g["arm"])
    assert arm["exposures"] == 1 and arm["clicks"] == 1
    assert api.get("/v1/experiments/nope/report", headers=auth("reporter")).status_code == 404
    exps = api.get("/v1/experiments", headers=auth("reporter")).json()
    assert exps[0]["name"] == "weighting" and [a["share"] for a in exps[0]["arms"]] == [0.5, 0.5]
    assert exps[0]["salt"] is None and api.get("/v1/experiments", headers=auth()).json()[0]["salt"] == "s1"


def test_compare_and_judgments(api):
    r = api.post("/v1/compare", json={"user_id": api.user, "reference_item_id": api.item, "seed": 4})
    assert r.status_code == 200, r.text
    pair = r.json()
    assert set(pair["a"]) == set(pair["b"]) == {"request_id", "url"}  # blind: nothing says which method
    rows = {x["request_id"]: x for x in api.svc.store.exposures_frame().to_dicts()}
    a, b = rows[pair["a"]["request_id"]], rows[pair["b"]["request_id"]]
    assert {a["method"], b["method"]} == {"ragar", "uniform"} and a["seed"] == b["seed"] == 4
    assert api.get(pair["a"]["url"]).status_code == 200
    body = {"request_a": pair["a"]["request_id"], "request_b": pair["b"]["request_id"], "preference_choice": "a",
            "identity_choice": "b", "idempotency_key": "judge-0001"}
    assert api.post("/v1/judgments", json=body).json()["duplicate"] is False
    assert api.post("/v1/judgments", json=body).json()["duplicate"] is True
    assert api.post("/v1/judgments", json={**body, "request_b": "nope", "idempotency_key": "judge-0002"}
                    ).status_code == 404
    assert api.post("/v1/judgments", json={**body, "request_b": body["request_a"]}).status_code == 400
    assert api.post("/v1/compare", json={"user_id": api.user, "reference_item_id": api.item,
                                         "methods": ["ragar", "ragar"]}).status_code == 400
    assert api.svc.store.judgments_frame().height == 1


def test_catalog_endpoints_and_the_page(api):
    items = api.get("/v1/items", params={"limit": 5}).json()
    assert len(items) == 5 and api.get(items[0]["image_url"]).status_code == 200
    assert api.get("/v1/items/zzz/image").status_code == 404
    assert api.get("/v1/images/not-a-uuid/0.png").status_code == 404
    assert api.get("/v1/images/00000000-0000-0000-0000-000000000000/0.png").status_code == 404
    users = api.get("/v1/users", params={"limit": 3}, headers=auth("reporter")).json()
    assert len(users) == 3 and users[0]["events"] >= users[1]["events"]
    page = api.get("/")
    assert page.status_code == 200 and "RAGAR" in page.text


def test_metrics_count_routes_arms_and_batches(api):
    g = _generate(api).json()
    assert api.get("/metrics").status_code == 403  # the app key has no report scope
    text = api.get("/metrics", headers=auth("reporter")).text
    assert f'ragar_requests_total{{arm="{g["arm"]}",route="/v1/generate",status="200"}} 1.0' in text
    assert "ragar_batch_size_count 1.0" in text
    assert "ragar_generation_seconds_count 1.0" in text
    assert "ragar_queue_depth 0.0" in text


def test_database_going_away_mid_run_is_503_and_writes_nothing(api):
    g = _generate(api).json()
    url = str(api.svc.store.engine.url)
    blocker = sa.create_engine(url).connect()
    blocker.exec_driver_sql("BEGIN EXCLUSIVE")  # another writer holds the database: writes cannot happen
    try:
        r = _generate(api, seed=2)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "unavailable" in r.text
        fb = api.post("/v1/feedback", json={"request_id": g["request_id"], "user_id": api.user, "image_index": 0,
                                            "event": "like", "idempotency_key": "fb-down-001"})
        assert fb.status_code == 503
    finally:
        blocker.exec_driver_sql("ROLLBACK")
        blocker.close()
    assert api.svc.store.exposures_frame()["request_id"].to_list() == [g["request_id"]]
    assert api.svc.store.feedback_frame().height == 0
    assert not any(p.name != g["request_id"] for p in api.svc.images_dir.glob("*/*"))  # its images were removed
    assert _generate(api, seed=3).status_code == 200  # back up: served again


def test_queue_full_is_429_with_retry_after(live):
    with live(queue_size=1, max_batch_size=1, max_wait_ms=0) as (url, svc):
        user, item = svc.users["user_id"][0], svc.items["item_id"][0]
        codes, lock = [], threading.Lock()
        gate, run = threading.Event(), svc.batcher.run_batch
        svc.batcher.run_batch = lambda key, jobs: (gate.wait(30), run(key, jobs))[1]  # hold the worker

        def hit(i):
            r = httpx.post(f"{url}/v1/generate", json={"user_id": user, "reference_item_id": item, "n": 4,
                                                       "seed": i}, timeout=60, headers=auth("app"))
            with lock:
                codes.append((r.status_code, r.headers.get("retry-after")))

        threads = [threading.Thread(target=hit, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        import time

        deadline = time.monotonic() + 30
        while len(codes) < 10 and time.monotonic() < deadline:  # one in the worker, one queued
            time.sleep(0.02)
        gate.set()
        for t in threads:
            t.join()
        assert sorted(c for c, _ in codes) == [200, 200] + [429] * 10
        assert {c for c, _ in codes} <= {200, 429}
        assert any(c == 429 for c, _ in codes) and any(c == 200 for c, _ in codes)
        assert all(ra == "1" for c, ra in codes if c == 429)
        assert svc.store.exposures_frame().height == sum(c == 200 for c, _ in codes)
        assert 'ragar_rejected_total{reason="queue_full"}' in httpx.get(f"{url}/metrics", headers=auth()).text


def test_timeout_is_504(live):
    with live(request_timeout_s=0.01) as (url, svc):
        r = httpx.post(f"{url}/v1/generate", json={"user_id": svc.users["user_id"][0],
                                                   "reference_item_id": svc.items["item_id"][0], "n": 4}, timeout=60,
                       headers=auth("app"))
        assert r.status_code == 504 and "did not finish" in r.text


def test_postgres_going_away_mid_run(live):
    """On PostgreSQL: connections refused and live ones terminated mid-run, then allowed again."""
    from tests.serving.helpers import admin_sql, drop_pg, fresh_pg

    url = fresh_pg()
    name = sa.engine.make_url(url).database
    try:
        with live(db_url=url) as (base, svc), httpx.Client(base_url=base, timeout=60, headers=auth("app")) as c:
            body = {"user_id": svc.users["user_id"][0], "reference_item_id": svc.items["item_id"][0], "n": 1}
            first = c.post("/v1/generate", json=body)
            assert first.status_code == 200, first.text
            admin_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            try:
                down = c.post("/v1/generate", json=body)
                assert down.status_code == 503 and down.headers["retry-after"] == "1", down.text
                assert c.get("/readyz").status_code == 503
                fb = c.post("/v1/feedback", json={"request_id": first.json()["request_id"], "image_index": 0,
                                                  "user_id": body["user_id"], "event": "click",
                                                  "idempotency_key": "pg-down-01"})
                assert fb.status_code == 503
            finally:
                admin_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert c.post("/v1/generate", json=body).status_code == 200
            assert c.get("/readyz").status_code == 200
            assert svc.store.exposures_frame().height == 2 and svc.store.feedback_frame().height == 0
            svc.store.dispose()
    finally:
        drop_pg(url)


def test_arm_with_its_own_generator(live, tmp_path, tiny_models):
    """An arm can name another generator under --models (e.g. rank task on/off); it is loaded once."""
    exp = tmp_path / "gen.yaml"
    exp.write_text("experiments:\n  - name: gen\n    salt: g\n    arms:\n"
                   "      - {name: base, share: 0.5}\n"
                   "      - {name: other, share: 0.5, settings: {generator: generator, n: 1}}\n"
                   "    allowlist: {u-other: other, u-base: base}\n")
    with live(experiments=exp, models=tiny_models["generator"].parent) as (url, svc):
        item = svc.items["item_id"][0]
        a = httpx.post(f"{url}/v1/generate", json={"user_id": "u-other", "reference_item_id": item}, timeout=60,
                       headers=auth("app"))
        b = httpx.post(f"{url}/v1/generate", json={"user_id": "u-base", "reference_item_id": item, "n": 2},
                       timeout=60, headers=auth("app"))
        assert a.status_code == b.status_code == 200
        assert a.json()["arm"] == "other" and len(a.json()["candidates"]) == 1
        assert b.json()["arm"] == "base" and len(b.json()["candidates"]) == 2
        assert set(svc._variants) == {None, "generator"}
        assert svc._variants["generator"].pipeline is not svc.personalizer.pipeline


def test_abandoned_request_is_cancelled_before_it_runs(live):
    """A client that gives up while its request waits in the queue costs nothing: it never runs."""
    import time

    with live(max_batch_size=1, max_wait_ms=0) as (url, svc):
        gate = threading.Event()
        run = svc.batcher.run_batch

        def held(key, jobs):  # the first batch waits for the gate, so the second request stays queued
            gate.wait(30)
            return run(key, jobs)

        svc.batcher.run_batch = held
        body = {"user_id": svc.users["user_id"][0], "reference_item_id": svc.items["item_id"][0], "n": 2}
        first = threading.Thread(target=lambda: httpx.post(f"{url}/v1/generate", json=body, timeout=60,
                                                           headers=auth("app")))
        first.start()
        time.sleep(0.2)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/generate", json={**body, "n": 1}, timeout=0.2, headers=auth("app"))
        deadline = time.monotonic() + 10
        while svc.batcher.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        gate.set()
        first.join()
        assert svc.batcher.cancelled == 1
        assert 'ragar_rejected_total{reason="abandoned"} 1.0' in httpx.get(f"{url}/metrics", headers=auth()).text
        time.sleep(0.5)  # time for the worker to (wrongly) run it, if it would
        assert svc.store.exposures_frame()["n"].to_list() == [2]  # only the first request was generated
