"""Simulated users against a running service: the world's users request images and react.

Each simulated user sends one request (a reference from a category they have history in, as the
offline evaluation samples them), looks at the chosen candidate, and reacts as the world's users
react to catalog items (``recsys.world.build``): the oracle utility of what they see (read off the
image by the attribute reader, in expectation) gives ``p_click = sigmoid(s * (u - click_threshold))``
and, after a click, ``p_like = sigmoid(s * (u - like_threshold))``; otherwise they skip. Reactions
go back through ``POST /v1/feedback`` with idempotency keys, so the experiment report that follows
reads only what the service stored.
"""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
import numpy as np
import polars as pl
from PIL import Image
from tqdm import tqdm

from eval.generation import expected_utility, read_images, sample_requests
from recsys.world.attributes import AttributeReader
from recsys.world.config import WorldConfig
from recsys.world.oracle import World


def simulated_requests(world: World, n_users: int, seed: int) -> pl.DataFrame:
    """One request per distinct user (n_users of them, or as many as have history)."""
    reqs = sample_requests(world, n_users * 4, seed)
    return reqs.unique("user_id", keep="first", maintain_order=True).head(n_users)


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def simulate(url: str, world: World, reader: AttributeReader, n_users: int, *, seed: int = 0, concurrency: int = 8,
             timeout_s: float = 300.0, progress: bool = True, api_key: str = "") -> pl.DataFrame:
    """Run the users against ``url`` with ``api_key`` (scopes generate and feedback); one row per
    request: arm, utility, reaction, HTTP outcome."""
    cfg = WorldConfig.model_validate(json.loads((world.root / "world.json").read_text())["config"])
    reqs = simulated_requests(world, n_users, seed)
    client = httpx.Client(base_url=url, timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"})

    def one(i: int, row: dict) -> dict:
        rng = np.random.default_rng([seed, i])
        body = {"user_id": row["user_id"], "reference_item_id": row["reference_item_id"], "seed": seed * 100_003 + i,
                "response_format": "base64"}
        for _ in range(20):  # 429 and 503 say when to come back
            r = client.post("/v1/generate", json=body)
            if r.status_code not in (429, 503):
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
        if r.status_code != 200:
            return {**row, "status": r.status_code, "arm": None, "utility": np.nan, "event": None}
        g = r.json()
        chosen = g["candidates"][g["chosen"]]
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(chosen["b64_png"]))).convert("RGB"))
        util = float(expected_utility(world, read_images(reader, img[None]), [row["user_id"]], [row["category"]])[0])
        click = rng.random() < _sigmoid(cfg.utility_sharpness * (util - cfg.click_threshold))
        like = click and rng.random() < _sigmoid(cfg.utility_sharpness * (util - cfg.like_threshold))
        events = (["click", "like"] if like else ["click"]) if click else ["skip"]
        for ev in events:
            fb = client.post("/v1/feedback", json={"request_id": g["request_id"], "user_id": row["user_id"],
                                                   "image_index": g["chosen"], "event": ev,
                                                   "idempotency_key": f"sim-{g['request_id']}-{ev}"})
            fb.raise_for_status()
        return {**row, "status": 200, "arm": g["arm"], "utility": util, "event": events[-1],
                "request_id": g["request_id"]}

    rows = []
    with ThreadPoolExecutor(concurrency) as pool:
        futs = [pool.submit(one, i, row) for i, row in enumerate(reqs.iter_rows(named=True))]
        for f in tqdm(as_completed(futs), total=len(futs), desc="simulated users", disable=not progress):
            rows.append(f.result())
    client.close()
    return pl.DataFrame(rows).sort("user_id")
