"""NearID identity encoder (seed paper 003): a frozen backbone + a multihead-attention-pooling head
trained with a two-tier contrastive loss, so that *the same identity* (another view, another
style) scores above *a near-identity distractor* (one part changed, same style, pose and
background as the positive), which scores above *a random other object*.

The tokens are feature maps of the frozen backbone at several depths (``levels``): by default the
8x8 map after block 10, the 4x4 map after block 14 and the 4x4 head conv, at 128 px. A distractor
differs from its source in one part (a handle, a lid), which the last 4x4 map alone blurs; the
finer, mid-level maps keep it. Each level is projected to the head's width and given a learned
position embedding; the head pools the concatenated sequence with one learned query (MAP, as in
SigLIP's pooling head), projects, and L2-normalises. Backbone features are computed once for
every render, so training the head takes minutes on a CPU.

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
import torch
from torch import nn

from ragar.encoders.base import ImageEncoder, ImageLike, fingerprint
from recsys.modeling import PretrainedMixin

DEFAULT_LEVELS = ("block10", "block14", "head")


@dataclass
class NearIDConfig:
    """``levels``: backbone feature maps used as tokens (``block<i>``: the output of block i,
    ``head``: the head conv); ``feature_dims`` and ``tokens`` are their channels and token counts
    at ``image_size``."""

    levels: tuple[str, ...] = DEFAULT_LEVELS
    feature_dims: tuple[int, ...] = (112, 192, 1280)
    tokens: tuple[int, ...] = (64, 16, 16)
    dim: int = 128
    heads: int = 4
    image_size: int = 128
    backbone: str = "efficientnet-lite0"
    temperature: float = 0.07
    margin: float = 0.1

    def __post_init__(self):
        if not (len(self.levels) == len(self.feature_dims) == len(self.tokens)) or not self.levels:
            raise ValueError(f"NearIDConfig: levels {self.levels}, feature_dims {self.feature_dims} and tokens "
                             f"{self.tokens} must be non-empty and of the same length")


class NearIDHead(PretrainedMixin, nn.Module):
    config_class = NearIDConfig
    model_type = "nearid-head"

    def __init__(self, config: NearIDConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.proj_in = nn.ModuleList(nn.Linear(f, d) for f in config.feature_dims)
        self.pos = nn.ParameterList(nn.Parameter(torch.randn(1, t, d) * 0.02) for t in config.tokens)
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, config.heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.out = nn.Linear(d, d)

    def forward(self, tokens: Sequence[torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        """One (B, T_l, F_l) token tensor per level -> (B, dim) unit embeddings. ``keep`` (B, ΣT_l)
        zeroes dropped tokens (token dropout in training)."""
        if len(tokens) != len(self.proj_in):
            raise ValueError(f"the head reads {len(self.proj_in)} levels {self.config.levels}, got {len(tokens)}")
        dt = self.query.dtype  # cached tokens are float16: computed in the head's dtype
        x = torch.cat([proj(t.to(dt)) + pos for t, proj, pos in zip(tokens, self.proj_in, self.pos, strict=True)], 1)
        if keep is not None:
            x = x * keep[..., None]
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), x, x)
        h = self.norm(pooled[:, 0])
        return nn.functional.normalize(self.out(h + self.mlp(h)), dim=-1)


def _backbone(image_size: int):
    from ragar.encoders.efficientnet import EfficientNetLiteEncoder

    return EfficientNetLiteEncoder(image_size)


def _block_index(level: str, n_blocks: int) -> int | None:
    if level == "head":
        return None
    if level.startswith("block") and level[5:].isdigit() and int(level[5:]) < n_blocks:
        return int(level[5:])
    raise ValueError(f"unknown backbone level {level!r}: use 'head' or block0..block{n_blocks - 1}")


def tokens_of(backbone, batch: Sequence[ImageLike] | torch.Tensor, levels: Sequence[str] = DEFAULT_LEVELS
              ) -> list[torch.Tensor]:
    """One (B, T, C) token sequence per level: the frozen backbone's feature maps of ``batch``
    (images, or an already preprocessed (B, 3, H, W) tensor), flattened over space."""
    m = backbone.model
    x = batch if isinstance(batch, torch.Tensor) else backbone.preprocess(batch)
    want = {_block_index(level, len(m._blocks)): level for level in levels}
    got: dict[str, torch.Tensor] = {}
    h = m._swish(m._bn0(m._conv_stem(x)))
    for i, block in enumerate(m._blocks):
        h = block(h)  # eval mode: no drop-connect, as in extract_features
        if i in want:
            got[want[i]] = h
    if None in want:
        got["head"] = m._swish(m._bn1(m._conv_head(h)))
    return [got[level].flatten(2).transpose(1, 2).contiguous() for level in levels]


@torch.no_grad()
def backbone_tokens(images: Sequence[ImageLike], image_size: int = 128, levels: Sequence[str] = DEFAULT_LEVELS,
                    batch_size: int = 64, progress: bool = False, cache_dir: Path | None = None,
                    desc: str = "backbone tokens", device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """One (N, T, C) float16 tensor per level (in host memory): the frozen backbone's feature maps
    of every image, computed on ``device``. ``cache_dir``: one .npy per level, reused when it holds
    as many rows as there are images."""
    from tqdm.auto import tqdm

    files = [cache_dir / f"nearid-{image_size}-{level}.npy" for level in levels] if cache_dir else None
    if files and all(f.exists() and len(np.load(f, allow_pickle=False, mmap_mode="r")) == len(images)
                     for f in files):
        return [torch.from_numpy(np.load(f, allow_pickle=False)) for f in files]
    enc = _backbone(image_size).to(device)
    batch_size = enc.forward_batch(batch_size)
    parts: list[list[torch.Tensor]] = [[] for _ in levels]
    for lo in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
        for part, t in zip(parts, tokens_of(enc, images[lo:lo + batch_size], levels), strict=True):
            part.append(t.half().cpu())
    out = [torch.cat(p) for p in parts]
    if files:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for f, t in zip(files, out, strict=True):
            np.save(f, t.numpy())
    return out


class NearIDEncoder(ImageEncoder):
    """The full encoder (``nearid:<dir>`` in configs): frozen backbone + the trained head."""

    def __init__(self, path: str | Path):
        self.head = NearIDHead.from_pretrained(path)
        self.backbone = _backbone(self.head.config.image_size)
        # the backbone's CPU forward batch (8) for the whole encoder: at 128 px on 2 threads it embeds
        # 512 demo images in 2.5 s against 5.4 s at 64 (16: 3.3 s) with the same bits; at 1 thread
        # oneDNN convolves a batch of 8 or fewer another way (unit vectors 5e-7 apart), so the bits
        # hold at the 2 threads every documented number was measured with
        self.cpu_forward_batch = self.backbone.cpu_forward_batch
        self.name = f"nearid:{Path(path).name}"
        self.dim = self.head.config.dim
        self._fp = fingerprint(self.name, {"image_size": self.head.config.image_size,
                                           "levels": self.head.config.levels},
                               dict(list(self.head.state_dict().items())[:4]))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def torch_modules(self) -> list[torch.nn.Module]:
        return [self.head]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> NearIDEncoder:
        self.backbone.to(device, dtype)
        return super().to(device, dtype)

    def _embed(self, batch: Sequence[ImageLike]) -> torch.Tensor:
        return self.head(tokens_of(self.backbone, batch, self.head.config.levels))


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
    import polars as pl  # here, not at the top: the encoder itself loads without polars

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


def merge_splits(main: IdentitySplit, extra: Sequence[IdentitySplit]) -> IdentitySplit:
    """``main`` followed by ``extra`` worlds whose identities all train (each one's identity names
    prefixed with ``x<i>/`` so that two worlds never share one); held-out stays ``main``'s."""
    paths, ident, dis, part = list(main.paths), [main.identity], [main.is_distractor], list(main.changed_part)
    cat, dist_of = [main.category], dict(main.distractor_of)
    for i, ex in enumerate(extra):
        off = len(paths)
        paths += ex.paths
        ident.append(np.char.add(f"x{i}/", ex.identity.astype(str)))
        dis.append(ex.is_distractor)
        part += ex.changed_part
        cat.append(ex.category)
        dist_of.update({k + off: [d + off for d in v] for k, v in ex.distractor_of.items()})
    return IdentitySplit(paths, np.concatenate(ident), np.concatenate(dis), dist_of, part, np.concatenate(cat),
                         set(main.held_out))


def two_tier_loss(a: torch.Tensor, p: torch.Tensor, d: torch.Tensor, n: torch.Tensor, temperature: float,
                  margin: float, negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``a``, ``p`` (B, D); ``d`` (B, K, D) near-identity distractors; ``n`` random negatives, either
    (B, M, D) per anchor or (M, D) shared by the batch, in which case ``negative_mask`` (B, M) is
    False where a negative is of the anchor's own identity (it is then left out)."""
    s_p = (a * p).sum(-1, keepdim=True)
    s_d = torch.einsum("bd,bkd->bk", a, d)
    s_n = a @ n.T if n.ndim == 2 else torch.einsum("bd,bmd->bm", a, n)
    if negative_mask is not None:
        s_n = s_n.masked_fill(~negative_mask, -1e4)  # exp(-1e4 / τ) = 0: out of the softmax and the max
    logits = torch.cat([s_p, s_d, s_n], 1) / temperature
    tier1 = nn.functional.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long, device=logits.device))
    tier2 = nn.functional.relu(margin - s_d + s_n.amax(1, keepdim=True)).mean()
    return tier1 + tier2


@dataclass
class NearIDTraining:
    """How the head is trained. Measured on the demo world (docs/EVALUATION.md): 128 negatives shared
    by the batch (four times cheaper than 16 per anchor, same SSR), one-cycle schedule, strong
    weight decay (the head overfits 150 identities within a few hundred steps)."""

    steps: int = 1200
    batch_size: int = 64
    negatives: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.3
    token_dropout: float = 0.25
    seed: int = 0


def train_nearid(tokens: Sequence[torch.Tensor], split: IdentitySplit, config: NearIDConfig | None = None,
                 training: NearIDTraining | None = None, progress: bool = True,
                 device: torch.device | str = "cpu") -> tuple[NearIDHead, list[float]]:
    """Train the head on the training identities' cached backbone ``tokens`` (one (N, T_l, F_l)
    tensor per level, rows aligned with ``split``) on ``device`` (the draws stay on the CPU, so a
    seed picks the same batches anywhere)."""
    from tqdm.auto import tqdm

    t = training or NearIDTraining()
    cfg = config or NearIDConfig(feature_dims=tuple(x.shape[2] for x in tokens),
                                 tokens=tuple(x.shape[1] for x in tokens))
    if any(len(x) != len(split.paths) for x in tokens):
        raise ValueError(f"{[len(x) for x in tokens]} token rows for {len(split.paths)} renders")
    torch.manual_seed(t.seed)
    head = NearIDHead(cfg).to(device)
    train_ids = set(split.identity.tolist()) - split.held_out
    trip = ssr_triplets(split, train_ids, t.seed)
    if len(trip["anchor"]) == 0:
        raise ValueError("no training triplets: the world has no near-identity distractors")
    pool = np.flatnonzero(np.isin(split.identity, list(train_ids)) & ~split.is_distractor)
    anchors = anchor_pools(split, train_ids)
    opt = torch.optim.AdamW(head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, t.lr, total_steps=t.steps, pct_start=0.05)
    g = np.random.default_rng(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    B, n_tok = t.batch_size, sum(cfg.tokens)
    losses = []
    head.train()
    for _ in tqdm(range(t.steps), desc="train identity encoder", disable=not progress):
        b = g.integers(len(trip["anchor"]), size=B)
        p_rows, d_rows = trip["positive"][b], trip["distractor"][b]
        # a fresh anchor every time (any other view of the identity, another style when there is
        # one): the head cannot memorise fixed pairs, it has to learn the identity
        a_rows = np.asarray([anchors[p][g.integers(len(anchors[p]))] for p in p_rows])
        neg = g.choice(pool, size=min(t.negatives, len(pool)), replace=False)
        valid = torch.from_numpy(split.identity[neg][None, :] != split.identity[p_rows][:, None]).to(device)
        rows = np.concatenate([a_rows, p_rows, d_rows, neg])
        keep = (torch.rand(len(rows), n_tok, generator=gen) > t.token_dropout).float().to(device)
        emb = head([x[rows].to(device) for x in tokens], keep)  # token dropout: parts must be read from several places
        a, p, d, n = emb[:B], emb[B:2 * B], emb[2 * B:3 * B], emb[3 * B:]
        loss = two_tier_loss(a, p, d[:, None], n, cfg.temperature, cfg.margin, negative_mask=valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return head.cpu().eval(), losses  # back on the CPU, where the cached tokens are


@torch.no_grad()
def embed_tokens(head: NearIDHead, tokens: Sequence[torch.Tensor], chunk: int = 512) -> torch.Tensor:
    """The head's embeddings of every row of cached ``tokens``, in chunks."""
    return torch.cat([head([x[lo:lo + chunk] for x in tokens]) for lo in range(0, len(tokens[0]), chunk)])
