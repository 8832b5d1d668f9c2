"""Compare generation methods on the world with the oracle: preference fit against identity kept.

Every method answers the same requests (user, reference item) with the same seeds. Each generated
image is read by the world's attribute reader (:mod:`recsys.world.attributes`), then

- **preference fit** is the oracle utility of the read style for this user in the reference's
  category (expected under the reader's probabilities, so an unreadable attribute counts as its
  average rather than as a coin flip), and whether the read palette is the user's ideal one;
- **identity kept** is whether the read category and parts equal the reference identity's, and the
  cosine to the reference in the identity encoder's space.

Three rows give the scale: the reference itself, unchanged (identity kept by definition, the
reference's own style utility); the user's ideal style (the ceiling of preference fit); and
**the perfect answer**, what a flawless generator would return: the world renders the
reference's identity, in the reference's view, in the user's ideal style, and it is measured
like any method (its NearID cosine and parts kept are the ceiling of identity kept while the style
changes). For a latent generator, the perfect answer encoded and decoded by its autoencoder is the
ceiling of that generator: every image it returns passes the same decoder.
Requests are sampled so that personalization has something to do: the user has positive history
in the reference's category, and the reference's style is not already the user's ideal one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from eval.metrics.intervals import bootstrap_ci, paired_bootstrap_ci
from ragar.generation.personalize import Personalizer
from recsys.data.images import load_rgb
from recsys.world.attributes import AttributeReader, images_to_tensor, max_parts
from recsys.world.oracle import World, user_index
from recsys.world.render import CATEGORIES


@dataclass
class Method:
    """One row of the comparison: a personalizer (its generator) and a weighting method."""

    name: str
    personalizer: Personalizer
    method: str
    n: int = 1          # candidates; > 1 means best-of-N with the personalizer's trade-off


def sample_requests(world: World, n: int, seed: int = 0, min_category_history: int = 2) -> pl.DataFrame:
    """(user_id, reference_item_id) pairs; see the module doc for the conditions."""
    rng = np.random.default_rng(seed)
    items = world.items.select("item_id", "category", "palette", "pattern", "finish")
    pos = (world.interactions().filter(pl.col("event_type").is_in(["click", "like"]))
           .join(items.lazy(), on="item_id").group_by("user_id", "category").agg(pl.len().alias("n"))
           .filter(pl.col("n") >= min_category_history).sort("user_id", "category").collect())
    if pos.height == 0:
        raise ValueError("no user has enough positive history in any category")
    o = world.oracle
    by_cat = {c: items.filter(pl.col("category") == c) for c in items["category"].unique().sort()}
    rows = []
    for i in rng.permutation(pos.height):
        user, cat = pos.row(int(i))[:2]
        cand = by_cat[cat]
        j = int(rng.integers(cand.height))
        item = cand.row(j, named=True)
        u, c = user_index([user])[0], o.category_index([cat])[0]
        ideal = o.ideal_style(u, c)
        if (item["palette"], item["pattern"], item["finish"]) == tuple(int(x) for x in ideal):
            continue
        rows.append({"user_id": user, "reference_item_id": item["item_id"], "category": cat})
        if len(rows) == n:
            break
    return pl.DataFrame(rows)


def read_images(reader: AttributeReader, images: np.ndarray) -> dict[str, np.ndarray]:
    return reader.read(images_to_tensor(images, reader.config.image_size))


def _true_parts(world: World, item_ids: list[str]) -> np.ndarray:
    attrs = dict(zip(world.items["item_id"], world.items["attributes"], strict=True))
    cats = dict(zip(world.items["item_id"], world.items["category"], strict=True))
    out = np.full((len(item_ids), max_parts()), -1)
    for r, i in enumerate(item_ids):
        a = json.loads(attrs[i])
        vals = [int(a[p]) for p in CATEGORIES[cats[i]]]
        out[r, :len(vals)] = vals
    return out


def expected_utility(world: World, read: dict[str, np.ndarray], user_ids, categories) -> np.ndarray:
    """The oracle utility of read images for these users, in expectation over the reader's style
    probabilities (a hard argmax would make a half-right image score like a wrong one)."""
    o = world.oracle
    u = user_index(np.asarray(user_ids))
    c = o.category_index(np.asarray(categories))
    return (np.einsum("bp,bp->b", read["palette_prob"], o.palette[u, c])
            + np.einsum("bp,bp->b", read["pattern_prob"], o.pattern[u, c])
            + np.einsum("bp,bp->b", read["finish_prob"], o.finish[u, c]))


def world_metrics(world: World, reader: AttributeReader, requests: pl.DataFrame, images: np.ndarray,
                  identity: np.ndarray, fit: np.ndarray) -> dict[str, np.ndarray]:
    """Oracle preference fit and identity kept of ``images`` answering ``requests`` (module doc)."""
    o = world.oracle
    read = read_images(reader, images)
    u = user_index(requests["user_id"].to_numpy())
    c = o.category_index(requests["category"].to_numpy())
    util = expected_utility(world, read, requests["user_id"].to_numpy(), requests["category"].to_numpy())
    ideal_pal = o.palette[u, c].argmax(-1)
    parts = _true_parts(world, requests["reference_item_id"].to_list())
    used = parts >= 0
    return {"utility": util, "ideal_palette": (read["palette"] == ideal_pal).astype(float),
            "category_kept": (read["category"] == c).astype(float),
            "parts_kept": ((read["parts"] == parts) & used).sum(1) / used.sum(1),
            "identity_cos": identity, "ranker_fit": fit}


def _reference_rows(world: World, reader: AttributeReader, requests: pl.DataFrame) -> dict[str, dict]:
    """The reference unchanged, and the ideal style (utility only), on the same requests."""
    o = world.oracle
    items = world.items.select("item_id", "image", "palette", "pattern", "finish")
    ref = requests.join(items, left_on="reference_item_id", right_on="item_id", how="left", maintain_order="left")

    imgs = np.stack([load_rgb(world.root / p) for p in ref["image"]])
    m = world_metrics(world, reader, requests, imgs, np.ones(requests.height), np.full(requests.height, np.nan))
    u = user_index(requests["user_id"].to_numpy())
    c = o.category_index(requests["category"].to_numpy())
    ideal = {"utility": o.palette[u, c].max(-1) + o.pattern[u, c].max(-1) + o.finish[u, c].max(-1),
             "ideal_palette": np.ones(len(u))}
    return {"reference unchanged": m, "ideal style (ceiling)": ideal}


IDEAL_ITEM_ROW = "oracle: the user's ideal item as preference"
PERFECT_ROW = "perfect answer (world render)"
#: the perfect answer encoded and decoded by the first method's autoencoder: everything a latent
#: generator returns passes its decoder, so this row is what that generator can reach at best
PERFECT_AE_ROW = "perfect answer through the generator's autoencoder"


def perfect_answers(world: World, requests: pl.DataFrame) -> np.ndarray:
    """(R, S, S, 3): each request's reference identity rendered in its reference view in the
    user's ideal style for the category (:func:`recsys.world.build.world_scenes`)."""
    from recsys.world.build import world_scenes
    from recsys.world.render import Style, render

    scenes = world_scenes(world.root)
    if scenes is None:
        raise ValueError(f"{world.root} has no world.json: the perfect answer needs the world's renderer")
    size = int(json.loads((world.root / "world.json").read_text())["config"]["image_size"])
    first = dict(zip(world.items["item_id"], world.items["image"], strict=True))
    o = world.oracle
    u = user_index(requests["user_id"].to_numpy())
    c = o.category_index(requests["category"].to_numpy())
    pal, pat, fin = o.ideal_style(u, c)
    out = []
    for k, item in enumerate(requests["reference_item_id"].to_list()):
        ident, _, view = scenes[first[item]]
        out.append(render(ident, Style(int(pal[k]), int(pat[k]), int(fin[k])), view, size))
    return np.stack(out)


def ideal_item_embeddings(world: World, personalizer: Personalizer, requests: pl.DataFrame) -> np.ndarray:
    """(R, D) embeddings of the catalog item the oracle says each request's user likes most in the
    category. Conditioning on them shows what the generator renders when the preference is exactly
    right: it separates the generator's controllability from the retrieval's accuracy (RAGAR's row
    sits between reference-only and this one)."""
    ideal = world.ideal_items(requests["user_id"].to_list(), requests["category"].to_numpy())
    return personalizer.vectors[[personalizer.positions[i] for i in ideal]].astype(np.float32)


def _generate(personalizer: Personalizer, users: list[str], refs: list[str], seeds: list[int], n: int, method: str,
              batch: int, desc: str, progress: bool, preference: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen image, its identity and its preference fit per request, ``batch`` requests a call."""
    out_img, ident, fit = [], [], []
    for s in tqdm(range(0, len(users), batch), desc=desc, disable=not progress):
        res = personalizer(users[s:s + batch], refs[s:s + batch], n=n, method=method, seed=seeds[s:s + batch],
                           preference_embeds=None if preference is None else preference[s:s + batch])
        out_img += [r.best.image for r in res]
        ident += [r.best.identity for r in res]
        fit += [r.best.preference_fit for r in res]
    return np.stack(out_img), np.asarray(ident), np.asarray(fit)


def evaluate_generation(world: World, reader: AttributeReader, methods: list[Method], requests: pl.DataFrame,
                        seed: int = 0, batch: int = 32, progress: bool = True, ideal_item_row: bool = True) -> dict:
    """Per-method metric means with 95% bootstrap intervals, paired differences against the
    baselines, and the images (``images[name]``: (R, H, W, 3)) for grids. ``ideal_item_row`` adds
    the first method's generator conditioned on the oracle's ideal item (:func:`ideal_item_embeddings`)."""
    per: dict[str, dict[str, np.ndarray]] = {}
    images: dict[str, np.ndarray] = {}
    users, refs = requests["user_id"].to_list(), requests["reference_item_id"].to_list()
    seeds = [seed + i for i in range(len(users))]
    for m in methods:
        images[m.name], ident, fit = _generate(m.personalizer, users, refs, seeds, m.n, m.method, batch,
                                               f"generate [{m.name}]", progress)
        per[m.name] = world_metrics(world, reader, requests, images[m.name], ident, fit)
    if ideal_item_row and methods:
        p = methods[0].personalizer
        img, ident, fit = _generate(p, users, refs, seeds, 1, "ragar", batch, "generate [ideal item]", progress,
                                    ideal_item_embeddings(world, p, requests))
        per[IDEAL_ITEM_ROW] = world_metrics(world, reader, requests, img, ident, fit)
    if methods:
        p = methods[0].personalizer
        img = perfect_answers(world, requests)
        fit, ident, _, _ = p.score(users, img, 1, refs, [None] * len(refs))
        per[PERFECT_ROW] = world_metrics(world, reader, requests, img, ident[:, 0], fit[:, 0])
        images[PERFECT_ROW] = img
        if getattr(p.pipeline, "vae", None) is not None:  # the ceiling of this latent generator
            rec = p.pipeline.autoencode(list(img))
            fit, ident, _, _ = p.score(users, rec, 1, refs, [None] * len(refs))
            per[PERFECT_AE_ROW] = world_metrics(world, reader, requests, rec, ident[:, 0], fit[:, 0])
    per.update(_reference_rows(world, reader, requests))
    rows = []
    for name, vals in per.items():
        row = {"method": name}
        for k, v in vals.items():
            v = np.asarray(v, dtype=float)
            if np.isnan(v).all():
                row[k] = None
                continue
            mean, lo, hi = bootstrap_ci(v, seed=seed)
            row[k] = {"mean": mean, "ci": [lo, hi]}
        rows.append(row)
    diffs = []
    for a in [m.name for m in methods]:
        for b in ("uniform", "reference-only"):
            if b in per and a != b and not a.startswith(b):
                for k in ("utility", "ideal_palette", "parts_kept", "identity_cos"):
                    d, lo, hi = paired_bootstrap_ci(per[a][k], per[b][k], seed=seed)
                    diffs.append({"method": a, "versus": b, "metric": k, "diff": d, "ci": [lo, hi]})
    return {"requests": requests.height, "rows": rows, "differences": diffs, "images": images,
            "per_request": {k: {m: np.asarray(v).tolist() for m, v in d.items()} for k, d in per.items()}}


@torch.no_grad()
def identity_grid(personalizer: Personalizer, users: list[str], reference: str, seed: int = 0) -> np.ndarray:
    """One reference rendered for several users (same seed): a (1, U) row of images."""
    res = personalizer(users, [reference] * len(users), n=1, seed=[seed] * len(users), score=False)
    return np.stack([r.best.image for r in res])
