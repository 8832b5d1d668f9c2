"""CLPIPS (seed paper 001): an LPIPS-style distance whose layer-combination weights are fitted to
ranked judgments.

``d(x, y) = Σ_l w_l · mean_{h,w} ‖n(f_l(x)) − n(f_l(y))‖²`` where ``f_l`` are the backbone's feature
maps after each stage and ``n`` unit-normalises every spatial position across channels (as LPIPS
does). The backbone stays frozen; only the per-layer weights ``w_l ≥ 0`` are fitted, with a margin
ranking loss on ranked pairs (reference, a, b, which of a and b is closer to the reference). The
unfitted distance is the same with every ``w_l = 1``.

Because the weights act on per-layer distances, the fit runs on the precomputed ``(pairs, L)``
layer distances: fitting costs nothing next to embedding the images once.

Reported (``fit_and_evaluate``), on held-out pairs, fitted against unfitted: 2AFC accuracy (share
of pairs ordered as judged), and where judgments carry a graded distance (the world's attribute
distance), Spearman's rho and ICC(2,1) between the metric and that distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy.stats import spearmanr
from torch import nn
from torchmetrics import Metric

from recsys.data.io import read_csv_with
from recsys.modeling import PretrainedMixin

PAIR_COLUMNS = ("reference", "a", "b", "closer")


@dataclass
class CLPIPSConfig:
    n_layers: int
    backbone: str = "efficientnet-lite0"
    image_size: int = 128


class CLPIPS(PretrainedMixin, nn.Module):
    """The layer weights (softplus-parameterised, so non-negative); the backbone is passed in."""

    config_class = CLPIPSConfig
    model_type = "clpips"

    def __init__(self, config: CLPIPSConfig):
        super().__init__()
        self.config = config
        # softplus(0.5413) = 1.0: unfitted = every layer weighted 1
        self.raw = nn.Parameter(torch.full((config.n_layers,), 0.5413))

    @property
    def weights(self) -> torch.Tensor:
        """Non-negative, mean 1: the margin loss is scale-free, so only the mix is fitted."""
        w = nn.functional.softplus(self.raw)
        return w / w.mean()

    def forward(self, layer_distances: torch.Tensor) -> torch.Tensor:
        """(N, L) per-layer distances -> (N,) CLPIPS distances."""
        return layer_distances @ self.weights


def layer_distances(features_x: list[torch.Tensor], features_y: list[torch.Tensor]) -> torch.Tensor:
    """(N, L): per layer, mean over positions of the squared distance of channel-unit-normalised features."""
    out = []
    for fx, fy in zip(features_x, features_y, strict=True):
        nx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        ny = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        out.append(((nx - ny) ** 2).sum(1).mean((1, 2)))
    return torch.stack(out, 1)


@torch.no_grad()
def pair_layer_distances(encoder, x: list, y: list, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """(N, L) layer distances between images ``x[i]`` and ``y[i]`` (paths, arrays or PIL images),
    with ``encoder`` an image encoder that has ``preprocess`` and ``feature_maps`` (EfficientNet)."""
    from tqdm.auto import tqdm

    if len(x) != len(y):
        raise ValueError(f"{len(x)} images against {len(y)}")
    out = []
    for lo in tqdm(range(0, len(x), batch_size), desc="clpips features", disable=not progress):
        fx = encoder.feature_maps(encoder.preprocess(x[lo:lo + batch_size]))
        fy = encoder.feature_maps(encoder.preprocess(y[lo:lo + batch_size]))
        out.append(layer_distances(fx, fy))
    return torch.cat(out)


def clpips_distance(x_features: list[torch.Tensor], y_features: list[torch.Tensor], model: CLPIPS | None = None
                    ) -> torch.Tensor:
    """Functional twin: CLPIPS distances (N,) from two lists of feature maps (unfitted without a model)."""
    d = layer_distances(x_features, y_features)
    return d.sum(1) if model is None else model(d)


class CLPIPSScore(Metric):
    """Mean CLPIPS distance over ``update(x_features, y_features)`` calls (lower is closer)."""

    higher_is_better = False
    is_differentiable = True
    full_state_update = False

    def __init__(self, model: CLPIPS | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("n", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, x_features: list[torch.Tensor], y_features: list[torch.Tensor]) -> None:
        d = clpips_distance(x_features, y_features, self.model)
        self.total += d.sum()
        self.n += len(d)

    def compute(self) -> torch.Tensor:
        return self.total / self.n.clamp_min(1)


# --- ranked pairs ----------------------------------------------------------------------------------

def read_ranked_pairs(path: str | Path) -> pl.DataFrame:
    """A CSV with columns reference, a, b, closer (``a`` or ``b``); optional dist_a, dist_b (graded
    ground truth). Errors name the file and the problem."""
    df = read_csv_with(path, PAIR_COLUMNS, "ranked pairs")
    bad = df.filter(~pl.col("closer").cast(pl.Utf8).is_in(["a", "b"]))
    if bad.height:
        raise ValueError(f"{path}: column 'closer' must be 'a' or 'b'; row {bad.row(0)} is not")
    if df.height == 0:
        raise ValueError(f"{path}: no pairs")
    return df


def icc_2_1(x: np.ndarray, y: np.ndarray) -> float:
    """ICC(2,1), two-way random effects, absolute agreement, of two raters over the same targets."""
    data = np.stack([x, y], 1).astype(float)
    n, k = data.shape
    grand = data.mean()
    ms_rows = k * ((data.mean(1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((data.mean(0) - grand) ** 2).sum() / (k - 1)
    sse = ((data - data.mean(1, keepdims=True) - data.mean(0, keepdims=True) + grand) ** 2).sum()
    ms_err = sse / ((n - 1) * (k - 1))
    return float((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n))


def _percentile(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return (rankdata(v) - 0.5) / len(v)


def fit_weights(da: torch.Tensor, db: torch.Tensor, a_closer: torch.Tensor, n_layers: int, margin: float = 0.05,
                steps: int = 500, lr: float = 0.05, config: CLPIPSConfig | None = None) -> CLPIPS:
    """Margin ranking loss on (N, L) layer distances of (ref, a) and (ref, b): the judged-closer
    image must be nearer by ``margin`` (relative to the mean distance)."""
    model = CLPIPS(config or CLPIPSConfig(n_layers))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    target = torch.where(a_closer, -1.0, 1.0)  # MarginRankingLoss(x1=d_a, x2=d_b): want d_a < d_b when a closer
    loss_fn = nn.MarginRankingLoss(margin=margin)
    for _ in range(steps):
        xa, xb = model(da), model(db)
        scale = torch.cat([xa, xb]).mean().detach().clamp_min(1e-8)
        loss = loss_fn(xa / scale, xb / scale, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def evaluate_pairs(model: CLPIPS | None, da: torch.Tensor, db: torch.Tensor, a_closer: torch.Tensor,
                   graded: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    with torch.no_grad():
        xa = (da.sum(1) if model is None else model(da)).numpy()
        xb = (db.sum(1) if model is None else model(db)).numpy()
    out = {"2afc": float(np.mean(np.where(a_closer.numpy(), xa < xb, xb < xa)))}
    if graded is not None:
        metric = np.concatenate([xa, xb])
        truth = np.concatenate(graded)
        out["spearman"] = float(spearmanr(metric, truth).statistic)
        out["icc"] = icc_2_1(_percentile(metric), _percentile(truth))
    return out


def world_ranked_pairs(root: str | Path, n: int, seed: int = 0) -> pl.DataFrame:
    """Judged pairs from the world's attributes (no people involved; reports say so): for a
    reference render and two renders of the same category, the closer one differs in fewer
    attributes (each part, palette, pattern, finish: 1; proportions: |Δwidth| + |Δheight|).
    Pose and background are not attributes: they vary freely. Near-ties (< 0.5) are skipped."""
    import json

    root = Path(root)
    items = pl.read_parquet(root / "items.parquet").select("item_id", "attributes", "palette", "pattern", "finish")
    views = pl.read_parquet(root / "views.parquet").join(items, on="item_id")
    rng = np.random.default_rng(seed)
    attrs = []
    cols = ("identity_id", "attributes", "palette", "pattern", "finish")
    for ident, a, pal, pat, fin in views.select(*cols).iter_rows():
        d = json.loads(a)
        parts = {k: v for k, v in d.items() if k not in ("width", "height", "palette", "pattern", "finish")}
        if "~" in ident:
            p, v = ident.split("~", 1)[1].split("=")
            parts[p] = int(v)
        attrs.append((d["width"], d["height"], parts, pal, pat, fin))

    def dist(i: int, j: int) -> float:
        wi, hi, pi, *si = attrs[i]
        wj, hj, pj, *sj = attrs[j]
        return (sum(pi[k] != pj[k] for k in pi) + sum(x != y for x, y in zip(si, sj, strict=True))
                + abs(wi - wj) + abs(hi - hj))

    by_cat = {c: np.flatnonzero(views["category"].to_numpy() == c) for c in views["category"].unique()}
    cats = views["category"].to_numpy()
    images, idents = views["image"].to_list(), views["identity_id"].to_list()
    rows = []
    while len(rows) < n:
        r = int(rng.integers(len(images)))
        a, b = rng.choice(by_cat[cats[r]], 2, replace=False)
        if r in (a, b):
            continue
        da, db = dist(r, int(a)), dist(r, int(b))
        if abs(da - db) < 0.5:
            continue
        rows.append({"reference": images[r], "a": images[a], "b": images[b], "closer": "a" if da < db else "b",
                     "dist_a": da, "dist_b": db, "reference_identity": idents[r].split("~")[0]})
    return pl.DataFrame(rows)


def fit_and_evaluate(encoder, pairs: pl.DataFrame, root: str | Path, holdout: float = 0.3, seed: int = 0,
                     progress: bool = True) -> tuple[CLPIPS, dict]:
    """Split pairs by reference (identity when known), fit on one part, report both distances on the other."""
    root = Path(root)
    key = "reference_identity" if "reference_identity" in pairs.columns else "reference"
    groups = sorted(set(pairs[key].to_list()))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(groups, max(1, int(len(groups) * holdout)), replace=False).tolist())
    test = np.asarray([g in held for g in pairs[key]])
    if test.all() or not test.any():
        raise ValueError("need pairs on both sides of the split (more distinct references)")
    path = lambda c: [str(root / p) for p in pairs[c]]  # noqa: E731
    da = pair_layer_distances(encoder, path("reference"), path("a"), progress=progress)
    db = pair_layer_distances(encoder, path("reference"), path("b"), progress=progress)
    a_closer = torch.from_numpy((pairs["closer"] == "a").to_numpy())
    tr, te = torch.from_numpy(~test), torch.from_numpy(test)
    model = fit_weights(da[tr], db[tr], a_closer[tr], da.shape[1],
                        config=CLPIPSConfig(da.shape[1], getattr(encoder, "name", "backbone"),
                                            getattr(encoder, "image_size", 0)))
    graded = None
    if {"dist_a", "dist_b"} <= set(pairs.columns):
        graded = (pairs["dist_a"].to_numpy()[test], pairs["dist_b"].to_numpy()[test])
    report = {"train_pairs": int((~test).sum()), "held_out_pairs": int(test.sum()), "layers": int(da.shape[1]),
              "weights": model.weights.detach().tolist(),
              "unfitted": evaluate_pairs(None, da[te], db[te], a_closer[te], graded),
              "fitted": evaluate_pairs(model, da[te], db[te], a_closer[te], graded)}
    return model, report
