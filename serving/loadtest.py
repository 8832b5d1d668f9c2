"""A bounded load generator for the API: C concurrent clients for T seconds, loopback only.

Each client loops ``POST /v1/generate`` (and a feedback for each success), honouring Retry-After on
429 and 503 (the deliberate push-back: a full queue or rate limit, and work that could not finish
before its deadline). The run stops by itself after ``duration_s`` (and after
``max_requests_per_client``), and refuses any URL that is not on the loopback interface.

After the clients are done it asks the server (``/metrics``, with the same key) when its generator
last worked: ``generator_tail_s`` is how long generation went on after the last client had its
answer or gave up, the work nobody waited for.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = ("127.", "localhost", "::1", "[::1]")


@dataclass
class LoadResult:
    clients: int
    duration_s: float
    requests: int
    ok: int
    rejected_429: int
    rejected_503: int
    errors: dict[str, int]
    throughput_rps: float
    images_per_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    mean_batch_size: float
    generator_tail_s: float | None = None
    max_batch_overrun_s: float | None = None
    max_batch_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _gauge(text: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def generator_tail(client, last_client_done: float, wait_s: float = 120.0
                   ) -> tuple[float | None, float | None, float | None]:
    """(seconds the generator worked after ``last_client_done`` (wall clock), the longest batch
    overrun past its deadlines, the longest batch), read from ``/metrics`` once it is idle."""
    deadline = time.monotonic() + wait_s
    while True:
        r = client.get("/metrics")
        if r.status_code != 200:
            return None, None, None
        if _gauge(r.text, "ragar_generator_busy") == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    end = _gauge(r.text, "ragar_last_batch_end_timestamp_seconds")
    tail = None if not end else max(0.0, end - last_client_done)
    return tail, _gauge(r.text, "ragar_batch_overrun_max_seconds"), _gauge(r.text, "ragar_batch_seconds_max")


def run_load(url: str, users: list[str], items: list[str], *, clients: int = 32, duration_s: float = 60.0,
             n: int = 1, max_requests_per_client: int = 10_000, feedback: bool = True, api_key: str = "",
             client_timeout_s: float | None = None) -> LoadResult:
    """``api_key`` needs the generate and feedback scopes (and report, for the generator tail).
    ``client_timeout_s`` (default: the run's duration, at least 30 s) should exceed the server's
    ``request_timeout_s``: a client that gives up first reports a ReadTimeout for a request the
    server is still working on, and the server's own answer (a result or 504) is lost."""
    host = urlparse(url).hostname or ""
    if not host.startswith(LOOPBACK):
        raise ValueError(f"load tests run against loopback only, not {host!r}")
    lat, batch, errors, lock = [], [], {}, threading.Lock()
    counts = {"requests": 0, "ok": 0, "429": 0, "503": 0}
    done_at = [0.0]
    t_end = time.monotonic() + duration_s
    headers = {"Authorization": f"Bearer {api_key}"}

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        with httpx.Client(base_url=url, timeout=client_timeout_s or max(30.0, duration_s), headers=headers) as c:
            try:
                _client_loop(k, rng, c)
            finally:
                with lock:
                    done_at[0] = max(done_at[0], time.time())

    def _client_loop(k, rng, c) -> None:
        for i in range(max_requests_per_client):
            if time.monotonic() >= t_end:
                return
            body = {"user_id": users[rng.integers(len(users))], "n": n, "seed": k * 100_000 + i,
                    "reference_item_id": items[rng.integers(len(items))]}
            t0 = time.perf_counter()
            try:
                r = c.post("/v1/generate", json=body)
                code = str(r.status_code)
            except httpx.HTTPError as e:
                r, code = None, type(e).__name__
            dt = time.perf_counter() - t0
            with lock:
                counts["requests"] += 1
                if code == "200":
                    counts["ok"] += 1
                    lat.append(dt)
                    batch.append(r.json()["timings"]["batch_size"])
                elif code in ("429", "503"):
                    counts[code] += 1
                else:
                    errors[code] = errors.get(code, 0) + 1
            if code in ("429", "503"):
                time.sleep(min(float(r.headers.get("Retry-After", "1")), max(0.0, t_end - time.monotonic())))
            elif code == "200" and feedback:
                g = r.json()
                f = c.post("/v1/feedback", json={"request_id": g["request_id"], "user_id": body["user_id"],
                                                 "image_index": g["chosen"], "event": "click",
                                                 "idempotency_key": f"load-{g['request_id']}"})
                if f.status_code != 200:
                    with lock:
                        errors[f"feedback {f.status_code}"] = errors.get(f"feedback {f.status_code}", 0) + 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + 120)
    wall = time.monotonic() - t0
    with httpx.Client(base_url=url, timeout=30, headers=headers) as c:
        tail, overrun, longest = generator_tail(c, done_at[0])
    q = np.percentile(lat, [50, 95, 99]) if lat else [np.nan] * 3
    return LoadResult(clients, wall, counts["requests"], counts["ok"], counts["429"], counts["503"], errors,
                      counts["ok"] / wall, counts["ok"] * n / wall, float(q[0]), float(q[1]), float(q[2]),
                      float(np.mean(batch)) if batch else float("nan"), tail, overrun, longest)
