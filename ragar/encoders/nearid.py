"""NearID identity encoder (seed paper 003): a frozen backbone + a multihead-attention-pooling head
trained with a two-tier contrastive loss, so that *the same identity* (another view, another
style) scores above *a near-identity distractor* (one part changed, same style, pose and
background as the positive), which scores above *a random other object*.

The backbone's last feature map is the token sequence; the head pools it with one learned query
(MAP, as in SigLIP's pooling head), projects, and L2-normalises. Backbone features are computed
once for every render, so training the head takes seconds to minutes on a CPU.

Loss per anchor (temperature τ, margin m):
``CE([s(a,p), s(a,d_1..K), s(a,n_1..M)] / τ, target=0) + mean_k relu(m − s(a,d_k) + max_j s(a,n_j))``:
the first tier puts the positive above every distractor and negative, the second keeps a
near-identity distractor above random negatives (it *is* almost the same object).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from ragar.encoders.base import ImageEncoder, ImageLike, fingerprint
from recsys.modeling import PretrainedMixin


@dataclass
class NearIDConfig:
    feature_dim: int = 1280
    dim: int = 256
    heads: int = 4
    image_size: int = 128
    backbone: str = "efficientnet-lite0"
    temperature: float = 0.07
    margin: float = 0.1


class NearIDHead(PretrainedMixin, nn.Module):
    config_class = NearIDConfig
    model_type = "nearid-head"

    def __init__(self, config: NearIDConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.proj_in = nn.Linear(config.feature_dim, d)
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, config.heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.out = nn.Linear(d, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, feature_dim) backbone tokens -> (B, dim) unit embeddings."""
        x = self.proj_in(tokens)
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), x, x)
        h = self.norm(pooled[:, 0])
        return nn.functional.normalize(self.out(h + self.mlp(h)), dim=-1)


def _backbone(image_size: int):
    from ragar.encoders.efficientnet import EfficientNetLiteEncoder

    return EfficientNetLiteEncoder(image_size)


@torch.no_grad()
def backbone_tokens(images: Sequence[ImageLike], image_size: int = 128, batch_size: int = 64,
                    progress: bool = False, cache: Path | None = None) -> torch.Tensor:
    """(N, T, 1280) last-layer feature maps of the frozen EfficientNet, as token sequences.
    ``cache``: an .npy file (fp16) reused when it holds as many rows as there are images."""
    from tqdm.auto import tqdm

    if cache is not None and cache.exists():
        got = np.load(cache, allow_pickle=False)
        if len(got) == len(images):
            return torch.from_numpy(got.astype(np.float32))
    enc = _backbone(image_size)
    out = torch.cat([tokens_of(enc, images[lo:lo + batch_size])
                     for lo in tqdm(range(0, len(images), batch_size), desc="backbone tokens", disable=not progress)])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, out.numpy().astype(np.float16))
    return out


def tokens_of(backbone, batch: Sequence[ImageLike]) -> torch.Tensor:
    """(B, T, 1280): the backbone's last feature map of ``batch`` as a token sequence."""
    f = backbone.model.extract_features(backbone.preprocess(batch))
    return f.flatten(2).transpose(1, 2).contiguous()


class NearIDEncoder(ImageEncoder):
    """The full encoder (``nearid:<dir>`` in configs): frozen backbone + the trained head."""

    def __init__(self, path: str | Path):
        self.head = NearIDHead.from_pretrained(path)
        self.backbone = _backbone(self.head.config.image_size)
        self.name = f"nearid:{Path(path).name}"
        self.dim = self.head.config.dim
        self._fp = fingerprint(self.name, {"image_size": self.head.config.image_size},
                               dict(list(self.head.state_dict().items())[:4]))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _embed(self, batch: Sequence[ImageLike]) -> torch.Tensor:
        return self.head(tokens_of(self.backbone, batch))


# --- training on the world -------------------------------------------------------------------------

@dataclass
class IdentitySplit:
    """Renders of a world with what the two-tier loss needs, split by identity."""

    paths: list[str]
    identity: np.ndarray       # base identity per render (distractors: their source identity)
    is_distractor: np.ndarray
    distractor_of: dict[int, list[int]]   # view row -> rows of its distractors
    changed_part: list[str | None]
    category: np.ndarray
    held_out: set[str]


def world_identity_split(root: str | Path, holdout: float = 0.2, seed: int = 0) -> IdentitySplit:
    root = Path(root)
    v = pl.read_parquet(root / "views.parquet")
    row_of = {vid: i for i, vid in enumerate(v["view_id"])}
    dist_of: dict[int, list[int]] = {}
    for i, (kind, src) in enumerate(v.select("kind", "source_view_id").iter_rows()):
        if kind == "distractor":
            dist_of.setdefault(row_of[src], []).append(i)
    base = np.asarray([i.split("~")[0] for i in v["identity_id"]])
    idents = sorted(set(base.tolist()))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(idents, max(1, int(len(idents) * holdout)), replace=False).tolist())
    return IdentitySplit([str(root / p) for p in v["image"]], base, (v["kind"] == "distractor").to_numpy(), dist_of,
                         v["changed_part"].to_list(), v["category"].to_numpy(), held)


def anchor_pools(split: IdentitySplit, identities: set[str]) -> dict[int, np.ndarray]:
    """For each view with distractors: every other view of its identity, other items (styles) first."""
    item_of = [Path(p).stem.rsplit("-v", 1)[0] for p in split.paths]
    views_of: dict[str, list[int]] = {}
    for i, (ident, dis) in enumerate(zip(split.identity, split.is_distractor, strict=True)):
        if not dis and ident in identities:
            views_of.setdefault(ident, []).append(i)
    pools = {}
    for pos in split.distractor_of:
        ident = split.identity[pos]
        if ident in identities:
            other = ([i for i in views_of[ident] if item_of[i] != item_of[pos]]
                     or [i for i in views_of[ident] if i != pos])
            if other:
                pools[pos] = np.asarray(other)
    return pools


def ssr_triplets(split: IdentitySplit, identities: set[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Evaluation triplets: anchor = a view of the identity in *another item (style)* than the
    positive when there is one; positive = a view that has distractors; distractors = those
    (same style, pose and background as the positive, one part changed)."""
    rng = np.random.default_rng(seed)
    anchors, positives, distractors, parts = [], [], [], []
    pools = anchor_pools(split, identities)
    for pos, ds in sorted(split.distractor_of.items()):
        others = pools.get(pos)
        if others is None:
            continue
        for d in ds:
            anchors.append(others[int(rng.integers(len(others)))])
            positives.append(pos)
            distractors.append(d)
            parts.append(split.changed_part[d])
    return {"anchor": np.asarray(anchors), "positive": np.asarray(positives), "distractor": np.asarray(distractors),
            "part": np.asarray(parts)}


def two_tier_loss(a: torch.Tensor, p: torch.Tensor, d: torch.Tensor, n: torch.Tensor, temperature: float,
                  margin: float) -> torch.Tensor:
    """``a``, ``p`` (B, D); ``d`` (B, K, D) near-identity distractors; ``n`` (B, M, D) random negatives."""
    s_p = (a * p).sum(-1, keepdim=True)
    s_d = torch.einsum("bd,bkd->bk", a, d)
    s_n = torch.einsum("bd,bmd->bm", a, n)
    logits = torch.cat([s_p, s_d, s_n], 1) / temperature
    tier1 = nn.functional.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long))
    tier2 = nn.functional.relu(margin - s_d + s_n.amax(1, keepdim=True)).mean()
    return tier1 + tier2


def train_nearid(tokens: torch.Tensor, split: IdentitySplit, config: NearIDConfig | None = None, steps: int = 1500,
                 batch_size: int = 64, negatives: int = 16, lr: float = 1e-3, seed: int = 0, progress: bool = True
                 ) -> tuple[NearIDHead, list[float]]:
    """Train the head on the training identities' cached backbone ``tokens`` (N, T, F)."""
    from tqdm.auto import tqdm

    cfg = config or NearIDConfig(feature_dim=tokens.shape[2])
    torch.manual_seed(seed)
    head = NearIDHead(cfg)
    train_ids = set(split.identity.tolist()) - split.held_out
    trip = ssr_triplets(split, train_ids, seed)
    if len(trip["anchor"]) == 0:
        raise ValueError("no training triplets: the world has no near-identity distractors")
    pool = np.flatnonzero(np.isin(split.identity, list(train_ids)) & ~split.is_distractor)
    anchors = anchor_pools(split, train_ids)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    g = np.random.default_rng(seed)
    losses = []
    head.train()
    for _ in tqdm(range(steps), desc="train identity encoder", disable=not progress):
        b = g.integers(len(trip["anchor"]), size=batch_size)
        p_rows, d_rows = trip["positive"][b], trip["distractor"][b]
        # a fresh anchor every time (any other view of the identity, another style when there is
        # one): the head cannot memorise fixed pairs, it has to learn the identity
        a_rows = np.asarray([anchors[p][g.integers(len(anchors[p]))] for p in p_rows])
        neg = g.choice(pool, size=(batch_size, negatives))
        same = split.identity[neg] == split.identity[p_rows][:, None]
        neg = np.where(same, g.choice(pool, size=neg.shape), neg)
        x = tokens[np.concatenate([a_rows, p_rows, d_rows, neg.ravel()])].float()
        keep = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(int(g.integers(2**31)))) > 0.25
        emb = head(x * keep[..., None])  # token dropout: parts must be read from several places
        a, p, d = emb[:batch_size], emb[batch_size:2 * batch_size], emb[2 * batch_size:3 * batch_size]
        n = emb[3 * batch_size:].view(batch_size, negatives, -1)
        loss = two_tier_loss(a, p, d[:, None], n, cfg.temperature, cfg.margin)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return head.eval(), losses
