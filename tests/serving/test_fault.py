"""Kill the server with SIGKILL under load, restart it, and check nothing acknowledged was lost."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from serving.security import add_key
from serving.server import free_port, wait_ready
from serving.store import EventStore
from tests.serving.conftest import EXPERIMENTS_YAML


def _key(tmp_path) -> dict[str, str]:
    """A keys file for the server (the same across its restart) and the header with its token."""
    token = add_key(tmp_path / "keys.yaml", "fault-test", ["admin"], rate_per_s=1000, burst=1000)
    return {"Authorization": f"Bearer {token}"}


def _start(tiny_models, tmp_path, port, saw: list | None = None):
    models = tiny_models["generator"].parent  # holds generator/ and rankers/
    cmd = [sys.executable, "-m", "ragar.cli", "serve", "--models", str(models), "--data", str(tiny_models["data"]),
           "--db", f"sqlite:///{tmp_path / 'events.db'}", "--experiments", str(tmp_path / "exp.yaml"),
           "--config", "tiny", "--port", str(port), "--num-inference-steps", "2",
           "--images-dir", str(tmp_path / "images"), "--max-batch-size", "4", "--api-keys", str(tmp_path / "keys.yaml")]
    log = open(tmp_path / f"server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    if saw is not None:  # while the models load: up (healthz 200) but not ready (readyz 503)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                h = httpx.get(f"{url}/healthz", timeout=2)
                r = httpx.get(f"{url}/readyz", timeout=2)
                saw.append((h.status_code, r.status_code))
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
    try:
        wait_ready(url, timeout_s=180)
    except TimeoutError:
        proc.kill()
        raise AssertionError((tmp_path / f"server-{port}.log").read_text()[-3000:]) from None
    return proc, url


@pytest.mark.timeout(600)
def test_sigkill_under_load_loses_no_acknowledged_event(tiny_models, tmp_path):
    (tmp_path / "exp.yaml").write_text(EXPERIMENTS_YAML)
    headers = _key(tmp_path)
    import polars as pl

    logged = pl.read_parquet(tiny_models["data"] / "interactions.parquet")["user_id"].unique().sort().to_list()
    users = [*logged[:12], "qa-user", "cold-user-1"]
    item = pl.read_parquet(tiny_models["data"] / "items.parquet")["item_id"][0]
    saw = []
    proc, url = _start(tiny_models, tmp_path, free_port(), saw)
    assert (200, 503) in saw and saw[-1] == (200, 200)  # readyz said 503 until the models were loaded
    acked_exposures, acked_feedback, errors = {}, set(), []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int):
        c = httpx.Client(base_url=url, timeout=30, headers=headers)
        i = 0
        while not stop.is_set() and i < 500:  # bounded
            u = users[(k + i) % len(users)]
            i += 1
            try:
                r = c.post("/v1/generate", json={"user_id": u, "reference_item_id": item, "n": 1, "seed": i})
                if r.status_code != 200:
                    with lock:
                        errors.append(r.status_code)
                    continue
                g = r.json()
                with lock:
                    acked_exposures[g["request_id"]] = (u, g["arm"])
                key = f"fb-{uuid.uuid4()}"
                f = c.post("/v1/feedback", json={"request_id": g["request_id"], "user_id": u, "image_index": 0,
                                                 "event": "click", "idempotency_key": key})
                if f.status_code == 200:
                    with lock:
                        acked_feedback.add(key)
            except httpx.TransportError:
                if proc.poll() is not None:
                    return  # the server is gone: whatever was not acknowledged may be lost
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked_exposures) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # mid-load: requests in flight, feedback being written
    proc.wait()
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acked_exposures) >= 20 and len(acked_feedback) >= 10 and set(errors) <= {429}

    proc2, url2 = _start(tiny_models, tmp_path, free_port())
    try:
        store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
        ex = store.exposures_frame()
        stored = dict(zip(ex["request_id"], zip(ex["user_id"], ex["arm"], strict=True), strict=True))
        missing = [r for r in acked_exposures if r not in stored]
        assert missing == [], f"{len(missing)} acknowledged exposures lost"
        assert all(stored[r] == v for r, v in acked_exposures.items())
        keys = set(store.feedback_frame()["idempotency_key"])
        assert acked_feedback <= keys, f"{len(acked_feedback - keys)} acknowledged feedback lost"
        arms_before = {u: a for u, a in acked_exposures.values()}
        for u, arm in arms_before.items():  # assignment is sticky across the restart
            assert httpx.get(f"{url2}/v1/experiments/weighting/assignments/{u}", headers=headers).json()["arm"] == arm
        r = httpx.post(f"{url2}/v1/generate", json={"user_id": users[0], "reference_item_id": item, "n": 1},
                       timeout=60, headers=headers)
        assert r.status_code == 200 and r.json()["arm"] == arms_before.get(users[0], r.json()["arm"])
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(30)
