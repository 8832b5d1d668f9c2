"""Serving under load: 32 concurrent clients for 60 s against the real server on loopback, with
micro-batching (max batch 8) and without it (max batch 1), measured in the same run.

Same personalizer as the generation bench (demo world and rankers when ``runs/demo`` exists).
Each request asks for one candidate at the configured sampler steps; the queue is bounded at 16,
so excess load gets 429 + Retry-After (which the clients honour) instead of unbounded latency.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks.bench_generation import _personalizer
from benchmarks.harness import Row, machine

RESULTS = Path(__file__).parent / "results"


def _run_one(p, tmp: Path, max_batch: int, clients: int, duration: float, steps: int):
    from serving.experiments import load_experiments
    from serving.loadtest import run_load
    from serving.security import ApiKeySpec, hash_token, new_token
    from serving.server import serve_in_thread
    from serving.service import Service
    from serving.settings import ServingSettings
    from serving.store import EventStore

    d = tmp / f"batch{max_batch}"
    token = new_token()  # the load clients' key: every scope they use, no rate limit in the way
    key = ApiKeySpec(name="bench", sha256=hash_token(token), scopes=["admin"], rate_per_s=1e6, burst=10**6)
    s = ServingSettings(db_url=f"sqlite:///{d / 'events.db'}", images_dir=d / "images", max_batch_size=max_batch,
                        max_wait_ms=25, queue_size=16, request_timeout_s=120, num_inference_steps=steps,
                        api_keys=[key])
    store = EventStore(s.db_url)
    store.migrate()
    import polars as pl

    items = pl.DataFrame({"item_id": list(p.catalog.ids), "category": ["?"] * len(p.catalog.ids)})
    svc = Service(s, p, store, load_experiments(None), items)
    users = svc.users["user_id"].head(200).to_list()
    refs = list(p.catalog.ids[:50])
    with serve_in_thread(svc) as url:
        run_load(url, users, refs, clients=4, duration_s=3, n=1, feedback=False, api_key=token)  # warm-up
        # the clients wait past the server's own timeout, so every request ends with the server's answer
        # (a result, 429, 503 or 504); at 60 s, on a slower machine, batch size 1 read 4 client timeouts
        res = run_load(url, users, refs, clients=clients, duration_s=duration, n=1, api_key=token,
                       client_timeout_s=s.request_timeout_s + 30)
    return res


def run(quick: bool = False) -> list[Row]:
    clients, duration = (32, 15.0) if quick else (32, 60.0)
    steps = 10 if quick else 25
    with tempfile.TemporaryDirectory() as d:
        p, where = _personalizer(Path(d))
        batched = _run_one(p, Path(d), 8, clients, duration, steps)
        single = _run_one(p, Path(d), 1, clients, duration, steps)
    if not quick:  # the raw numbers docs/SERVING.md renders; a smoke run leaves them alone
        from ragar.provenance import run_record

        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "serving-load.json").write_text(json.dumps(
            {"where": where, "steps": steps, "clients": clients, "duration_s": duration,
             "machine": machine(), "provenance": run_record("python -m benchmarks.run", ["--only", "serving"]),
             "batched": batched.to_dict(), "batch_1": single.to_dict()}, indent=2))
    tag = f"({clients} clients, {duration:g} s, {where}, {steps} steps)"
    print(f"micro-batching (max 8): {batched.to_dict()}")
    print(f"batch size 1:           {single.to_dict()}")
    return [
        Row("serving", f"requests/s with micro-batching {tag}", batched.throughput_rps, "req/s", "max batch 1",
            single.throughput_rps),
        Row("serving", f"p50 latency, micro-batching (mean batch {batched.mean_batch_size:.1f})", batched.p50_s, "s",
            "max batch 1", single.p50_s, higher_is_better=False),
        Row("serving", "p95 latency, micro-batching", batched.p95_s, "s", "max batch 1", single.p95_s,
            higher_is_better=False),
        Row("serving", "p99 latency, micro-batching", batched.p99_s, "s", "max batch 1", single.p99_s,
            higher_is_better=False),
        Row("serving", "errors other than 429/503 (both runs)", float(sum(batched.errors.values())
                                                                       + sum(single.errors.values())), "count"),
        Row("serving", "generator work after the last client left, micro-batching", batched.generator_tail_s or 0.0,
            "s", "max batch 1", single.generator_tail_s or 0.0, higher_is_better=False),
    ]


if __name__ == "__main__":
    for r in run(quick=True):
        print(r.to_dict())
