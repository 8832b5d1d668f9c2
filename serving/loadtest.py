"""A bounded load generator for the API: C concurrent clients for T seconds, loopback only.

Each client loops ``POST /v1/generate`` (and a feedback for each success), honouring Retry-After on
429. The run stops by itself after ``duration_s`` (and after ``max_requests_per_client``), and
refuses any URL that is not on the loopback interface.
"""

from __future__ import annotations

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
    errors: dict[str, int]
    throughput_rps: float
    images_per_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    mean_batch_size: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_load(url: str, users: list[str], items: list[str], *, clients: int = 32, duration_s: float = 60.0,
             n: int = 1, max_requests_per_client: int = 10_000, feedback: bool = True) -> LoadResult:
    host = urlparse(url).hostname or ""
    if not host.startswith(LOOPBACK):
        raise ValueError(f"load tests run against loopback only, not {host!r}")
    lat, batch, errors, lock = [], [], {}, threading.Lock()
    counts = {"requests": 0, "ok": 0, "429": 0}
    t_end = time.monotonic() + duration_s

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        with httpx.Client(base_url=url, timeout=max(30.0, duration_s)) as c:
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
                    elif code == "429":
                        counts["429"] += 1
                    else:
                        errors[code] = errors.get(code, 0) + 1
                if code == "429":
                    time.sleep(min(float(r.headers.get("Retry-After", "1")), max(0.0, t_end - time.monotonic())))
                elif code == "200" and feedback:
                    g = r.json()
                    f = c.post("/v1/feedback", json={"request_id": g["request_id"], "image_index": g["chosen"],
                                                     "event": "click", "idempotency_key": f"load-{g['request_id']}"})
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
    q = np.percentile(lat, [50, 95, 99]) if lat else [np.nan] * 3
    return LoadResult(clients, wall, counts["requests"], counts["ok"], counts["429"], errors, counts["ok"] / wall,
                      counts["ok"] * n / wall, float(q[0]), float(q[1]), float(q[2]),
                      float(np.mean(batch)) if batch else float("nan"))
