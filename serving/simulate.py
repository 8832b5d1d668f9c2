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
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
import numpy as np
import polars as pl
from tqdm import tqdm

from eval.generation import expected_utility, read_images, sample_requests
from recsys.data.images import load_rgb
from recsys.world.attributes import AttributeReader
from recsys.world.config import WorldConfig
from recsys.world.oracle import World


def simulated_requests(world: World, n_users: int, seed: int) -> pl.DataFrame:
    """One request per distinct user (n_users of them, or as many as have history)."""
    reqs = sample_requests(world, n_users * 4, seed)
    return reqs.unique("user_id", keep="first", maintain_order=True).head(n_users)


def returning_traffic(world: World, n_users: int, days: int, *, seed: int = 0, visit_p: float = 0.6,
                      max_requests_per_visit: int = 3) -> pl.DataFrame:
    """Users who come back: ``n_users`` of the world's users, each active on a simulated day with
    probability ``visit_p`` and then sending 1 to ``max_requests_per_visit`` requests. Each
    reference is an item the user browsed (an impression in the log) in a category where they have
    clicked or liked at least twice, as the offline evaluation samples categories. One row per
    request: day, user, reference, category."""
    rng = np.random.default_rng(seed)
    cats = world.items.select("item_id", "category")
    inter = world.interactions().join(cats.lazy(), on="item_id")
    liked = (inter.filter(pl.col("event_type").is_in(["click", "like"])).group_by("user_id", "category")
             .agg(pl.len().alias("n")).filter(pl.col("n") >= 2).select("user_id", "category"))
    # sorted before grouping: a list's order inside a parallel group_by is not fixed, and the same
    # seed must send the same traffic
    browsed = (inter.filter(pl.col("event_type") == "impression").join(liked, on=["user_id", "category"])
               .sort("user_id", "item_id").group_by("user_id", maintain_order=True)
               .agg(pl.col("item_id"), pl.col("category")).collect())
    if browsed.height == 0:
        raise ValueError("no user has browsed a category they like: no traffic to simulate")
    pool = browsed[np.sort(rng.choice(browsed.height, min(n_users, browsed.height), replace=False))]
    rows = []
    for day in range(days):
        for user, items, categories in pool.iter_rows():
            if rng.random() >= visit_p:
                continue
            for _ in range(int(rng.integers(1, max_requests_per_visit + 1))):
                j = int(rng.integers(len(items)))
                rows.append({"day": day, "user_id": user, "reference_item_id": items[j], "category": categories[j]})
    return pl.DataFrame(rows, schema={"day": pl.Int64, "user_id": pl.Utf8, "reference_item_id": pl.Utf8,
                                      "category": pl.Utf8})


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


class Simulator:
    """The world's users as clients of a running service: each request is generated, the chosen
    image's oracle utility read by the attribute reader, and the user's reaction (click, like or
    skip, drawn as the world's users react to catalog items) sent back as feedback."""

    def __init__(self, url: str, world: World, reader: AttributeReader, *, api_key: str = "", seed: int = 0,
                 concurrency: int = 8, timeout_s: float = 300.0, progress: bool = True):
        self.world, self.reader, self.seed, self.concurrency, self.progress = world, reader, seed, concurrency, progress
        self.cfg = WorldConfig.model_validate(json.loads((world.root / "world.json").read_text())["config"])
        self.client = httpx.Client(base_url=url, timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"})
        self.sent = 0  # requests so far: seeds and reaction draws continue across waves

    def close(self) -> None:
        self.client.close()

    def _one(self, i: int, row: dict) -> dict:
        cfg, client = self.cfg, self.client
        rng = np.random.default_rng([self.seed, i])
        body = {"user_id": row["user_id"], "reference_item_id": row["reference_item_id"],
                "seed": (self.seed * 100_003 + i) % (2**31 - 1), "response_format": "base64"}
        for _ in range(20):  # 429 and 503 say when to come back
            r = client.post("/v1/generate", json=body)
            if r.status_code not in (429, 503):
                break
            time.sleep(float(r.headers.get("Retry-After", "1")))
        if r.status_code != 200:
            return {**row, "status": r.status_code, "arm": None, "utility": np.nan, "event": None}
        g = r.json()
        chosen = g["candidates"][g["chosen"]]
        img = load_rgb(base64.b64decode(chosen["b64_png"]))
        util = float(expected_utility(self.world, read_images(self.reader, img[None]), [row["user_id"]],
                                      [row["category"]])[0])
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

    def run(self, reqs: pl.DataFrame, desc: str = "simulated requests") -> pl.DataFrame:
        """Send one wave of requests concurrently; one row per request."""
        start, rows = self.sent, []
        self.sent += reqs.height
        with ThreadPoolExecutor(self.concurrency) as pool:
            futs = [pool.submit(self._one, start + i, row) for i, row in enumerate(reqs.iter_rows(named=True))]
            for f in tqdm(as_completed(futs), total=len(futs), desc=desc, disable=not self.progress):
                rows.append(f.result())
        return pl.DataFrame(rows)

    def report(self, experiment: str) -> dict:
        r = self.client.get(f"/v1/experiments/{experiment}/report", timeout=120)
        r.raise_for_status()
        return r.json()


def simulate(url: str, world: World, reader: AttributeReader, n_users: int, *, seed: int = 0, concurrency: int = 8,
             timeout_s: float = 300.0, progress: bool = True, api_key: str = "") -> pl.DataFrame:
    """One request per user against ``url`` with ``api_key`` (scopes generate and feedback); one
    row per request: arm, utility, reaction, HTTP outcome."""
    sim = Simulator(url, world, reader, api_key=api_key, seed=seed, concurrency=concurrency, timeout_s=timeout_s,
                    progress=progress)
    try:
        return sim.run(simulated_requests(world, n_users, seed), "simulated users").sort("user_id")
    finally:
        sim.close()
