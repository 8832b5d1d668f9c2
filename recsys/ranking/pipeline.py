"""Train and evaluate the rankers on a log, split by time.

- train window: impressions before the 80% time quantile (its last 10% of time is validation, for
  early stopping and calibration); test window: the rest. Features only ever read the past.
- Slate metrics on the test window: NDCG@10 (graded: like 2, click 1), AUC and GAUC on clicks.
- HR@10 on sampled candidates: each test click's item among 99 random catalog items, scored at
  the click's request time (a logged slate of 10 would make HR@10 trivially 1).
- Models: popularity (past clicks), cosine to the retrieval-weighted preference, cosine to the
  uniform history mean, LightGBM LambdaRank on retrieval-weighted and on uniform features, and the
  DIN ranker with target attention and with mean pooling (its uniform-history variant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.data.splits import global_time_split
from recsys.preference import PreferenceConfig
from recsys.ranking.din import DINConfig, DINRanker, predict_logits, train_din
from recsys.ranking.features import ItemTable, build_features, feature_names, impressions_with_labels
from recsys.ranking.lgbm import LambdaRankRanker

DIN_STATS = ["hist_len", "user_past_pos", "user_past_ctr"]


def din_stats(df: pl.DataFrame) -> np.ndarray:
    """User-side stats only: the torch ranker judges a candidate by its content, so a generated
    image (no popularity) is not at a disadvantage."""
    return np.stack([np.log1p(df["hist_len"].to_numpy()), np.log1p(df["user_past_pos"].to_numpy()),
                     df["user_past_ctr"].to_numpy()], 1).astype(np.float32)


@dataclass
class Split:
    samples: pl.DataFrame
    features: pl.DataFrame
    hist_pos: np.ndarray     # per request (R, N): a slate's history is stored once
    hist_mask: np.ndarray
    skip_pos: np.ndarray     # per request (R, K)
    skip_mask: np.ndarray
    request_row: np.ndarray  # (S,) the request of each sample

    def din_inputs(self) -> dict:
        return {"hist_pos": self.hist_pos, "hist_mask": self.hist_mask, "skip_pos": self.skip_pos,
                "skip_mask": self.skip_mask, "request_row": self.request_row}

    def cand_image(self, items: ItemTable) -> np.ndarray:
        pos = items.positions
        return items.image[[pos[i] for i in self.samples["item_id"]]]


def _split(samples: pl.DataFrame, interactions, items: ItemTable, config: PreferenceConfig, progress: bool) -> Split:
    fb = build_features(samples, interactions, items, config, progress=progress)
    return Split(samples, fb.features, fb.hist_positions, fb.hist_mask, fb.skip_positions, fb.skip_mask,
                 fb.request_row)


@dataclass
class RankingData:
    train: Split
    valid: Split
    test: Split
    hr: Split  # sampled-candidate groups for HR@10
    preference: PreferenceConfig | None = None  # what the features' RAGAR weights were built with


def prepare(interactions: pl.DataFrame | pl.LazyFrame, items: ItemTable, config: PreferenceConfig | None = None,
            cut: float = 0.8, valid_share: float = 0.1, hr_queries: int = 500, hr_negatives: int = 99,
            seed: int = 0, max_train: int | None = None, progress: bool = False) -> RankingData:
    config = config or PreferenceConfig()
    interactions = interactions.lazy().collect() if isinstance(interactions, pl.LazyFrame) else interactions
    train_log, test_log = global_time_split(interactions, cut)
    imp_train = impressions_with_labels(train_log)
    imp_test = impressions_with_labels(test_log)
    t_valid = imp_train["timestamp"].quantile(1 - valid_share, interpolation="lower")
    first = pl.col("timestamp").min().over("request_id")
    valid = imp_train.filter(first >= t_valid)
    train = imp_train.filter(first < t_valid)
    if max_train and train.height > max_train:  # keep the newest requests whole
        keep = train.select("request_id", "timestamp").unique("request_id").sort("timestamp").tail(max_train // 10)
        train = train.join(keep.select("request_id"), on="request_id", how="semi")
    rng = np.random.default_rng(seed)
    clicks = imp_test.filter(pl.col("click"))
    if clicks.height > hr_queries:
        clicks = clicks[np.sort(rng.choice(clicks.height, hr_queries, replace=False)).tolist()]
    rows = []
    for q, (u, i, r, t) in enumerate(clicks.select("user_id", "item_id", "request_id", "timestamp").iter_rows()):
        others = items.ids[rng.choice(len(items.ids), hr_negatives + 1, replace=False)]
        negs = [o for o in others if o != i][:hr_negatives]
        for j, item in enumerate([i, *negs]):
            rows.append((u, item, f"{r}#hr{q}", t, j, j == 0))
    hr = pl.DataFrame(rows, schema=["user_id", "item_id", "request_id", "timestamp", "position", "click"],
                      orient="row").with_columns(pl.col("click").cast(pl.Int8).alias("grade"))
    mk = lambda s: _split(s, interactions, items, config, progress)  # noqa: E731
    return RankingData(mk(train), mk(valid), mk(imp_test), mk(hr), config)


@dataclass
class Rankers:
    lgbm: dict[str, LambdaRankRanker]
    din: dict[str, DINRanker]
    din_losses: dict[str, list[float]]
    # the preference settings LightGBM's features were built with: features for these rankers must
    # be built the same way (``ragar eval ranker`` does), or the model reads features it never saw
    preference: PreferenceConfig | None = None

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        for k, m in self.lgbm.items():
            m.save_pretrained(path / f"lgbm-{k}")
        for k, m in self.din.items():
            m.save_pretrained(path / f"din-{k}")
        (path / "rankers.json").write_text(json.dumps({"lgbm": list(self.lgbm), "din": list(self.din),
                                                       "din_losses": self.din_losses,
                                                       "preference": self.preference and self.preference.model_dump()},
                                                      indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Rankers:
        path = Path(path)
        meta = json.loads((path / "rankers.json").read_text())
        return cls({k: LambdaRankRanker.from_pretrained(path / f"lgbm-{k}") for k in meta["lgbm"]},
                   {k: DINRanker.from_pretrained(path / f"din-{k}") for k in meta["din"]}, meta["din_losses"],
                   PreferenceConfig(**meta["preference"]) if meta.get("preference") else None)


def lgbm_features(split: Split, variant: str) -> np.ndarray:
    return split.features.select(feature_names(variant)).to_numpy().astype(np.float32)


def train_rankers(data: RankingData, items: ItemTable, epochs: int = 4, seed: int = 0,
                  progress: bool = False, device: torch.device | str = "cpu") -> Rankers:
    """LightGBM on the CPU; the torch rankers on ``device`` (saved and returned on the CPU)."""
    tr, va = data.train, data.valid
    lgbm = {}
    for variant in ("ragar", "uniform"):
        lgbm[variant] = LambdaRankRanker(feature_names(variant), {"seed": seed}).fit(
            lgbm_features(tr, variant), tr.samples["grade"].to_numpy(), tr.samples["request_id"].to_numpy(),
            lgbm_features(va, variant), va.samples["grade"].to_numpy(), va.samples["request_id"].to_numpy(),
            position=tr.samples["position"].to_numpy())
    din, losses = {}, {}
    for variant, att in (("ragar", "target"), ("uniform", "mean")):
        torch.manual_seed(seed)
        model = DINRanker(DINConfig(items.image.shape[1], items.combined.shape[1], len(DIN_STATS), attention=att))
        d = tr.din_inputs()
        losses[variant] = train_din(model, tr.cand_image(items), d.pop("hist_pos"), d.pop("hist_mask"),
                                    din_stats(tr.features), tr.samples["click"].to_numpy(),
                                    tr.samples["position"].to_numpy(), items.image, items.combined, **d,
                                    epochs=epochs, seed=seed, progress=progress, device=device)
        din[variant] = model
    return Rankers(lgbm, din, losses, data.preference)


def subset(split: Split, rows: np.ndarray) -> Split:
    rows = np.asarray(rows)
    return Split(split.samples[rows.tolist()], split.features[rows.tolist()], split.hist_pos, split.hist_mask,
                 split.skip_pos, split.skip_mask, split.request_row[rows])


def din_logits(model: DINRanker, split: Split, cand: np.ndarray, items: ItemTable) -> np.ndarray:
    d = split.din_inputs()
    return predict_logits(model, cand, d.pop("hist_pos"), d.pop("hist_mask"), din_stats(split.features),
                          items.image, items.combined, **d)
