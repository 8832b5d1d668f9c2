"""Personalized representations on the world (seed paper 004's protocol on the synthetic world).

For each target identity among the world's held-out identities (the same split the NearID encoder
holds out, so no encoder here was fitted to them):

* **real images**: 3 views of one item of the identity (one object in one style, as a user's own
  bag would be photographed);
* **gallery**: every render of every held-out identity (views *and* near-identity distractors),
  minus the 3 real images; relevant = the target identity's other views, in every style;
* **training negatives**: renders of the training identities only (views and distractors), so the
  gallery's objects are never trained against; the generator borrows styles and look-alikes from
  training identities' items only.

Three encoders per target: the base encoder (EfficientNet-Lite0), a LoRA trained on the 3 real
images alone (augmented) and the personalized LoRA (+ pastes and generated renders), with the same
training budget. Reported per target and as means over targets with 95% bootstrap intervals, and
the paired differences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from eval.metrics.intervals import bootstrap_ci, paired_bootstrap_ci
from eval.metrics.personalized import personalized_pr_auc, personalized_retrieval_ndcg
from ragar.encoders.configs import LoraTrainingConfig, SyntheticDataConfig
from ragar.encoders.lora import (
    cached_prefix,
    hard_negative_order,
    lora_model,
    tail_embedding,
)
from ragar.encoders.nearid import world_identity_split
from ragar.encoders.personalized import train_personalized_encoder

ENCODERS = ("base", "real-only", "personalized")


@dataclass
class WorldProtocol:
    paths: list[str]               # every render of the world
    identity: np.ndarray           # base identity per render
    is_view: np.ndarray            # False for near-identity distractors
    gallery: np.ndarray            # rows of held-out identities' renders
    negatives: np.ndarray          # rows of training identities' renders
    targets: list[dict]            # identity, category, item_id, real rows
    held_out_items: set[str]


def world_protocol(root: str | Path, n_identities: int = 24, holdout: float = 0.2, seed: int = 0,
                   n_real: int = 3) -> WorldProtocol:
    root = Path(root)
    if not (root / "views.parquet").exists():
        raise FileNotFoundError(f"{root} is not a world directory (no views.parquet)")
    split = world_identity_split(root, holdout, seed)
    v = pl.read_parquet(root / "views.parquet")
    held = np.isin(split.identity, sorted(split.held_out))
    is_view = ~split.is_distractor
    by_cat: dict[str, list[str]] = {}
    for ident in sorted(split.held_out):
        by_cat.setdefault(str(split.category[np.flatnonzero(split.identity == ident)[0]]), []).append(ident)
    rng = np.random.default_rng(seed)
    for ids in by_cat.values():
        rng.shuffle(ids)
    order = [ids[i] for i in range(max(map(len, by_cat.values()))) for ids in by_cat.values() if i < len(ids)]
    if len(order) < n_identities:
        raise ValueError(f"the world holds out {len(order)} identities; {n_identities} asked for "
                         "(build a bigger world or lower --identities)")
    items = v["item_id"].to_list()
    targets = []
    for ident in order[:n_identities]:
        rows = np.flatnonzero((split.identity == ident) & is_view)
        item = min(items[r] for r in rows)
        own = [r for r in rows if items[r] == item]
        if len(own) < n_real:
            raise ValueError(f"item {item} has {len(own)} views; {n_real} real images needed")
        targets.append({"identity": ident, "category": str(split.category[rows[0]]), "item_id": item,
                        "real": np.asarray(own[:n_real])})
    held_items = {items[r] for r in np.flatnonzero(held)}
    return WorldProtocol(split.paths, split.identity, is_view, np.flatnonzero(held), np.flatnonzero(~held),
                         targets, held_items)


def _scores(model, real_prefix, gal_prefix, relevant, first_block: int) -> dict[str, float]:
    with torch.no_grad():
        a = tail_embedding(model, real_prefix, first_block)
        g = tail_embedding(model, gal_prefix, first_block)
    return {"ndcg": personalized_retrieval_ndcg(a, g, relevant), "pr_auc": personalized_pr_auc(a, g, relevant)}


def evaluate_world(root: str | Path, personalizer, n_identities: int = 24, lora: LoraTrainingConfig | None = None,
                   data: SyntheticDataConfig | None = None, holdout: float = 0.2, seed: int = 0,
                   progress: bool = True, on_target=None, device: torch.device | str = "cpu") -> dict:
    """Per-target rows and the summary; ``on_target(row, result)`` is called after each target
    (the CLI saves example images and partial results from it)."""
    from tqdm.auto import tqdm

    lora = lora or LoraTrainingConfig()
    data = data or SyntheticDataConfig()
    t0 = time.perf_counter()
    proto = world_protocol(root, n_identities, holdout, seed)
    base = lora_model(lora)  # LoRA B = 0: exactly the base encoder
    paths = proto.paths
    gal_prefix = cached_prefix(base, [paths[i] for i in proto.gallery], lora)
    neg_paths = [paths[i] for i in proto.negatives]
    neg_prefix = cached_prefix(base, neg_paths, lora)
    with torch.no_grad():
        neg_base = tail_embedding(base, neg_prefix, lora.first_block)
    features_s = time.perf_counter() - t0
    rows = []
    for tgt in tqdm(proto.targets, desc="personalized encoders", disable=not progress):
        keep = ~np.isin(proto.gallery, tgt["real"])
        g_rows = proto.gallery[keep]
        relevant = (proto.identity[g_rows] == tgt["identity"]) & proto.is_view[g_rows]
        gp = gal_prefix[torch.from_numpy(keep)]
        real_paths = [paths[i] for i in tgt["real"]]
        real_prefix = cached_prefix(base, real_paths, lora)
        with torch.no_grad():
            hard = hard_negative_order(neg_base, tail_embedding(base, real_prefix, lora.first_block))
        row = {"identity": tgt["identity"], "category": tgt["category"], "item_id": tgt["item_id"],
               "relevant": int(relevant.sum()), "gallery": len(g_rows)}
        row |= {f"base/{k}": v for k, v in _scores(base, real_prefix, gp, relevant, lora.first_block).items()}
        results = {}
        for variant in ("real-only", "personalized"):
            res = train_personalized_encoder(real_paths, neg_paths, variant=variant,
                                             personalizer=personalizer if variant == "personalized" else None,
                                             data=data, lora=lora, exclude_items=proto.held_out_items,
                                             negative_prefix=neg_prefix, hard_order=hard, device=device)
            row |= {f"{variant}/{k}": v for k, v in _scores(res.model, real_prefix, gp, relevant,
                                                            lora.first_block).items()}
            row[f"{variant}/train_s"] = res.seconds["train_s"]
            row[f"{variant}/data_s"] = res.seconds["data_s"]
            results[variant] = res
        rows.append(row)
        if on_target is not None:
            on_target(row, results)
    return {"rows": rows, "summary": summarize(rows, seed), "identities": len(rows),
            "protocol": {"held_out_identities": len(set(proto.identity[proto.gallery].tolist())),
                         "gallery_images": len(proto.gallery), "training_negatives": len(proto.negatives),
                         "real_images": 3, "holdout": holdout, "seed": seed},
            "seconds": {"features": features_s, "total": time.perf_counter() - t0}}


def summarize(rows: list[dict], seed: int = 0) -> dict:
    """Means over targets with 95% bootstrap intervals, and paired differences of the
    personalized encoder against the others (the relative gain as the paper reports it)."""
    out: dict = {"encoders": [], "differences": []}
    for metric in ("ndcg", "pr_auc"):
        vals = {e: np.asarray([r[f"{e}/{metric}"] for r in rows]) for e in ENCODERS}
        for e in ENCODERS:
            m, lo, hi = bootstrap_ci(vals[e], seed=seed)
            out["encoders"].append({"encoder": e, "metric": metric, "mean": m, "ci_low": lo, "ci_high": hi})
        for other in ("base", "real-only"):
            d, lo, hi = paired_bootstrap_ci(vals["personalized"], vals[other], seed=seed)
            out["differences"].append({"comparison": f"personalized - {other}", "metric": metric, "mean": d,
                                       "ci_low": lo, "ci_high": hi,
                                       "relative": d / max(float(vals[other].mean()), 1e-12),
                                       "wins": int((vals["personalized"] > vals[other]).sum()),
                                       "identities": len(rows)})
    return out
