"""Offline replay on interaction logs: every method answers the same held-out requests.

Time split (global, by quantile): each positive event after the cut is a request. Its reference
is another item of the same identity (where the catalog has identities), else another item of the
same category, else the item itself; its history is the user's log strictly before the event.
Every method generates from that past with the same seed, and each image is scored by

- **semantic** (to the reference): cosine ×100 in the image encoder's space, SSIM, CLPIPS;
- **personalization** (to the user): history similarity ×100 (Pigeon's Hist), the ranker's
  preference fit, and, on the world, the oracle utility and attribute reading (``eval.generation``);
- **retrieval**: the image queries the catalog (faiss); HR@K / NDCG@K of the user's held-out
  items (all their positives after the cut).

Deterministic by seed; work is written as one parquet shard per (method, unit of users), so an
interrupted run resumes where it stopped and never repeats or skips a request, and the units can be
shared by several processes under ``accelerate launch`` (:mod:`ragar.distributed`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from eval.generation import world_metrics
from eval.metrics.clpips import pair_layer_distances
from eval.metrics.identity import IdentityGallery
from eval.metrics.intervals import bootstrap_ci, paired_bootstrap_ci
from eval.metrics.ranking import hit_and_ndcg
from eval.metrics.semantic import embedding_similarity, history_similarity, ssim
from ragar.distributed import Processes, ShardedJob, assign_units
from ragar.generation.personalize import Personalizer
from ragar.generation.pipeline import weights_fingerprint
from recsys.data.images import load_rgb
from recsys.data.io import scan_interactions
from recsys.data.schema import POSITIVE_EVENTS
from recsys.data.splits import global_time_split
from recsys.index import ItemIndex


def replay_requests(root: str | Path, n: int, cut: float = 0.8, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(requests, held-out positives): requests = [request_idx, user_id, target_item_id,
    reference_item_id, as_of]."""
    root = Path(root)
    items = pl.read_parquet(root / "items.parquet", columns=[c for c in ("item_id", "identity_id", "category")
                                                               if c in pl.read_parquet_schema(root / "items.parquet")])
    # lazy: only the positive events after the cut are ever materialised (the large world streams)
    _, test = global_time_split(scan_interactions(root), cut)
    pos = (test.filter(pl.col("event_type").is_in(POSITIVE_EVENTS)).select("user_id", "item_id", "timestamp")
           .sort("timestamp", "user_id", "item_id").collect(engine="streaming"))
    if pos.height == 0:
        raise ValueError(f"{root}: no positive events after the {cut:.0%} time cut to replay")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(pos.height, min(n, pos.height), replace=False))
    req = pos[pick.tolist()].select("user_id", pl.col("item_id").alias("target_item_id"),
                                    pl.col("timestamp").alias("as_of"))
    group = "identity_id" if "identity_id" in items.columns else ("category" if "category" in items.columns else None)
    refs = []
    if group is None:
        refs = req["target_item_id"].to_list()
    else:
        members = items.group_by(group).agg(pl.col("item_id"))
        sib = dict(zip(members[group], members["item_id"], strict=True))
        grp = dict(zip(items["item_id"], items[group], strict=True))
        for t in req["target_item_id"]:
            others = sorted(i for i in sib[grp[t]] if i != t)
            refs.append(others[int(rng.integers(len(others)))] if others else t)
    req = req.with_columns(pl.Series("reference_item_id", refs)).with_row_index("request_idx")
    held = pos.select("user_id", "item_id").unique()
    return req, held


def identity_gallery(world, encoder, progress: bool = True) -> IdentityGallery:
    """Every render of the world (views and near-identity distractors, each labelled with its own
    identity, so a distractor counts as a *wrong* identity) embedded by the identity encoder."""
    v = world.views
    emb = encoder.encode([str(world.root / p) for p in v["image"]], progress=progress)
    return IdentityGallery(emb, v["identity_id"].to_list(), v["category"].to_list())


#: the column holding each request's chosen image (raw HxWx3 uint8 bytes, square)
IMAGE = "image_rgb"
NOT_METRICS = ("request_idx", "method", IMAGE)


def chosen_images(scores: pl.DataFrame, method: str, request_idx: list[int]) -> np.ndarray:
    """(len(request_idx), S, S, 3) the images the replay chose for ``method`` at those requests."""
    rows = scores.filter(pl.col("method") == method).select("request_idx", IMAGE)
    by = dict(rows.iter_rows())
    raw = [np.frombuffer(by[i], np.uint8) for i in request_idx]
    side = round((raw[0].size // 3) ** 0.5)
    return np.stack([r.reshape(side, side, 3) for r in raw])


class Replay:
    """Holds what every method's scoring shares: catalog index, histories, reference images."""

    def __init__(self, personalizer: Personalizer, root: str | Path, requests: pl.DataFrame, held: pl.DataFrame,
                 k: int = 10, clpips_encoder=None, world=None, reader=None, gallery: bool = True):
        self.p, self.root, self.requests, self.k = personalizer, Path(root), requests, k
        self.index = ItemIndex.build(personalizer.catalog.ids, personalizer.catalog.image)
        self.held = held.group_by("user_id").agg(pl.col("item_id"))
        self.held = dict(zip(self.held["user_id"], [set(x) for x in self.held["item_id"]], strict=True))
        self.clpips_encoder, self.world, self.reader = clpips_encoder, world, reader
        hist = personalizer.histories(requests["user_id"].to_list(), requests["as_of"].to_list()).tail(
            personalizer.config.history_len)  # the histories the served requests weigh
        self.hist_pos, self.hist_mask = hist.positions, hist.mask
        self.gallery = None
        if world is not None and gallery:
            self.gallery = identity_gallery(world, personalizer.identity_encoder)
            self.identity_of = dict(zip(world.items["item_id"], world.items["identity_id"], strict=True))

    def score_chunk(self, rows: pl.DataFrame, method: str, n: int, seed: int, **gen) -> pl.DataFrame:
        p = self.p
        res = p(rows["user_id"].to_list(), rows["reference_item_id"].to_list(), n=n, method=method,
                seed=[seed + int(i) for i in rows["request_idx"]], as_of=rows["as_of"].to_list(), **gen)
        imgs = np.stack([r.best.image for r in res])
        size = imgs.shape[1]
        ref_imgs = np.stack([load_rgb(p.reference_images[i], size=size) for i in rows["reference_item_id"]])
        known = [r.best.embedding for r in res]  # computed by the personalizer when it scored
        emb = np.stack(known) if all(e is not None for e in known) else p.image_encoder.encode(list(imgs))
        ref_emb = p.catalog.image[[p.positions[i] for i in rows["reference_item_id"]]]
        idx = rows["request_idx"].to_numpy()
        hpos, hmask = self.hist_pos[idx], self.hist_mask[idx]
        hist = torch.from_numpy(p.catalog.image[np.where(hmask, hpos, 0)])
        out = {"request_idx": idx, "method": [method] * len(idx),
               IMAGE: [im.tobytes() for im in imgs],  # the chosen image, so the report never regenerates it
               "sem_cos": embedding_similarity(torch.from_numpy(emb), torch.from_numpy(ref_emb)).numpy(),
               "ssim": ssim(torch.from_numpy(imgs), torch.from_numpy(ref_imgs)).numpy(),
               "hist_cos": history_similarity(torch.from_numpy(emb), hist, torch.from_numpy(hmask)).numpy(),
               "ranker_fit": np.asarray([r.best.preference_fit for r in res]),
               "identity_cos": np.asarray([r.best.identity for r in res])}
        if self.clpips_encoder is not None:
            out["clpips"] = pair_layer_distances(self.clpips_encoder, list(imgs), list(ref_imgs)).sum(1).numpy()
        found = self.index.search(emb, self.k).ids
        hr, nd = zip(*[hit_and_ndcg(found[j], self.held.get(u, set()), self.k) for j, u in enumerate(rows["user_id"])],
                     strict=True)
        out[f"hr@{self.k}"], out[f"ndcg@{self.k}"] = np.asarray(hr), np.asarray(nd)
        if self.gallery is not None:
            fpr = self.gallery.per_query(p.identity_encoder.encode(list(imgs)),
                                         [self.identity_of[i] for i in rows["reference_item_id"]], k=100)
            out["fpr_ap@100"], out["fpr_rank@100"] = fpr["ap"], fpr["rank"].astype(float)
        if self.world is not None and self.reader is not None:
            cats = dict(zip(self.world.items["item_id"], self.world.items["category"], strict=True))
            reqs = rows.with_columns(pl.Series("category", [cats[i] for i in rows["reference_item_id"]]))
            m = world_metrics(self.world, self.reader, reqs, imgs, out["identity_cos"], out["ranker_fit"])
            out.update({k: m[k] for k in ("utility", "ideal_palette", "category_kept", "parts_kept")})
        return pl.DataFrame(out)


def run_replay(replay: Replay, methods: list[str], out: str | Path, n: int = 1, seed: int = 0, batch: int = 32,
               unit_size: int = 64, procs: Processes | None = None, progress: bool = True) -> pl.DataFrame | None:
    """Score every method on every request, resuming from the shards already in ``out/shards``.

    Requests are cut into units by user id (:mod:`ragar.distributed`), so the replay runs on one
    process or many under ``accelerate launch``; returns the merged scores if this process finished
    the job (the last one merges), else None."""
    reqs = replay.requests
    unit = assign_units(reqs["user_id"].to_list(), unit_size)
    settings = {"requests": reqs.height, "methods": methods, "n": n, "seed": seed, "batch": batch,
                "unit_size": unit_size, "shard_format": 2,  # 2: shards keep the chosen image (IMAGE)
                # other weights into the same --out are refused, not merged with the old shards
                "generator": weights_fingerprint(replay.p.pipeline)}
    present = sorted(set(unit.tolist()))
    job = ShardedJob(out, settings, [(m, u) for m in methods for u in present], procs)
    todo = list(job.mine())
    for method, u in tqdm(todo, desc=f"replay [{job.procs.index + 1}/{job.procs.count}]", disable=not progress,
                          position=job.procs.index):
        rows = reqs.filter(pl.Series(unit == u))
        job.write(method, u, pl.concat([replay.score_chunk(rows[lo:lo + batch], method, n, seed)
                                        for lo in range(0, rows.height, batch)]))
    if job.pending():
        return None
    return job.merge(["method", "request_idx"])


def summarize(scores: pl.DataFrame, baselines: tuple[str, ...] = ("uniform", "reference-only"), seed: int = 0
              ) -> dict:
    """Per method means with bootstrap 95% intervals, and paired differences against the baselines."""
    metrics = [c for c in scores.columns if c not in NOT_METRICS]
    methods = scores["method"].unique(maintain_order=True).to_list()
    by = {m: scores.filter(pl.col("method") == m).sort("request_idx") for m in methods}
    rows, diffs = [], []
    for m in methods:
        row = {"method": m}
        for k in metrics:
            v = by[m][k].to_numpy().astype(float)
            v = v[~np.isnan(v)]
            if len(v) == 0:
                row[k] = None
                continue
            mean, lo, hi = bootstrap_ci(v, seed=seed)
            row[k] = {"mean": mean, "ci": [lo, hi]}
        rows.append(row)
        for b in baselines:
            if b in by and b != m:
                for k in metrics:
                    a, c = by[m][k].to_numpy().astype(float), by[b][k].to_numpy().astype(float)
                    ok = ~(np.isnan(a) | np.isnan(c))
                    if ok.any():
                        d, lo, hi = paired_bootstrap_ci(a[ok], c[ok], seed=seed)
                        diffs.append({"method": m, "versus": b, "metric": k, "diff": d, "ci": [lo, hi]})
    return {"requests": int(scores["request_idx"].n_unique()), "metrics": metrics, "rows": rows, "differences": diffs}


def tradeoff_curve(rp, scales: list[float], seed: int, n_requests: int = 48) -> list[dict]:
    """RAGAR at several preference guidance scales on the first requests: consistency vs preference."""
    rows = rp.requests[:n_requests]
    out = []
    for s in tqdm(scales, desc="trade-off sweep"):
        df = rp.score_chunk(rows, "ragar", 1, seed, preference_guidance_scale=s)
        out.append({"preference_guidance_scale": s, **{c: float(np.nanmean(df[c].to_numpy())) for c in df.columns
                                                     if c not in NOT_METRICS}})
    return out
