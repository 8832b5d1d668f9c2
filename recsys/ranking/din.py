"""A differentiable DIN-style ranker: target attention of the candidate over the user's history.

The attention (an MLP over projected candidate and history embeddings, plus a RAGAR similarity
prior) learns the weights of a candidate-specific preference embedding; the head scores the
candidate by its cosine to that learned preference, to RAGAR's retrieval-weighted preference, to
the most similar history item and to what the user skipped, with user statistics.

The candidate is an *image* embedding, so any image (a catalog render or a generated one) is
scored the same way, and gradients flow back into whatever produced the image: this is what the
generator's rank task back-propagates through. History items are catalog items seen through their
multimodal (image + text) embeddings.

Logged clicks are position-biased, so training factorises them PAL-style:
``P(click) = P(seen | position) * P(click | seen, user, image)``; the position tower absorbs the
bias and the content tower is what scores images. ``click_probability`` is the calibrated
probability of a click at the top slot, ``sigmoid(content) * sigmoid(seen_0)``, a maximum
likelihood estimate by construction (checked against the observed CTR on a later window).

Saved like a Hugging Face model: ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys.modeling import PretrainedMixin
from recsys.preference import PreferenceConfig, preference_weights


@dataclass
class DINConfig:
    cand_dim: int
    hist_dim: int
    n_stats: int = 0
    hidden: int = 32
    attention: str = "target"  # "target" (DIN) or "mean" (the uniform-history variant)

    def __post_init__(self):
        if self.attention not in ("target", "mean"):
            raise ValueError(f"attention must be target or mean, not {self.attention!r}")


class DINRanker(PretrainedMixin, nn.Module):
    config_class = DINConfig
    model_type = "din"

    def __init__(self, config: DINConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.cand_proj = nn.Sequential(nn.Linear(config.cand_dim, h), nn.LayerNorm(h))
        self.hist_proj = nn.Sequential(nn.Linear(config.hist_dim, h), nn.LayerNorm(h))
        self.att = nn.Sequential(nn.Linear(4 * h, h), nn.GELU(), nn.Linear(h, 1))
        self.sim_scale = nn.Parameter(torch.tensor(20.0))  # 1 / temperature of the similarity prior
        self.preference = PreferenceConfig()
        self.head = nn.Sequential(nn.Linear(6 + config.n_stats, 2 * h), nn.GELU(), nn.Linear(2 * h, h),
                                  nn.GELU(), nn.Linear(h, 1))
        self.position_logit = nn.Parameter(torch.linspace(2.0, 0.0, 64))  # P(seen | slot), PAL-style

    def forward(self, cand: torch.Tensor, hist_image: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor,
                stats: torch.Tensor | None = None, skip_image: torch.Tensor | None = None,
                skip_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``cand`` (B, Dc) image embeddings, ``hist_image`` (B, N, Dc) the history's image
        embeddings, ``hist`` (B, N, Dh) its multimodal embeddings, ``mask`` (B, N), and optionally
        the images the user skipped (``skip_image`` (B, K, Dc), ``skip_mask``) -> logits (B,)."""
        if cand.ndim != 2 or cand.shape[1] != self.config.cand_dim:
            raise ValueError(f"candidate embeddings must be (B, {self.config.cand_dim}), got {tuple(cand.shape)}")
        if hist.ndim != 3 or hist.shape[2] != self.config.hist_dim or hist.shape[0] != cand.shape[0]:
            raise ValueError(f"history must be (B, N, {self.config.hist_dim}), got {tuple(hist.shape)}")
        if not torch.isfinite(cand).all():
            raise ValueError("candidate embeddings contain NaN or inf")
        unit = nn.functional.normalize(cand, dim=-1)
        sim = torch.einsum("bd,bnd->bn", unit, hist_image)
        skip_sim = None
        if skip_image is not None:
            skip_sim = torch.einsum("bd,bnd->bn", unit, skip_image)
        return self._head(cand, unit, sim, lambda w: torch.einsum("bn,bnd->bd", w, hist_image),
                          self.hist_proj(hist), mask, stats, skip_sim, skip_mask)

    def forward_positions(self, cand: torch.Tensor, hist_pos: torch.Tensor, mask: torch.Tensor,
                          image_table: torch.Tensor, item_table: torch.Tensor, stats: torch.Tensor | None = None,
                          skip_pos: torch.Tensor | None = None, skip_mask: torch.Tensor | None = None
                          ) -> torch.Tensor:
        """History given as positions into the catalog tables. Similarities are taken against the
        whole table and gathered, and the multimodal table is projected once: no (B, N, D) gather,
        which is what makes training on a CPU practical."""
        idx = hist_pos.clamp_min(0)
        unit = nn.functional.normalize(cand, dim=-1)
        sim_all = unit @ image_table.T
        sim = torch.gather(sim_all, 1, idx)
        skip_sim = None if skip_pos is None else torch.gather(sim_all, 1, skip_pos.clamp_min(0))

        def pref(w: torch.Tensor) -> torch.Tensor:
            dense = torch.zeros(w.shape[0], image_table.shape[0], dtype=w.dtype, device=w.device)
            dense.scatter_add_(1, idx, w)
            return dense @ image_table

        return self._head(cand, unit, sim, pref, self.hist_proj(item_table)[idx], mask, stats, skip_sim, skip_mask)

    def _head(self, cand, unit, sim, pref_of, hh, mask, stats, skip_sim=None, skip_mask=None):
        """``sim`` (B, N): cosine of the candidate to each history image; ``pref_of(w)``: the
        w-weighted sum of history image embeddings; ``skip_sim`` (B, K) cosine to skipped images."""
        mask = mask.bool()
        c = self.cand_proj(cand)
        neg = torch.finfo(sim.dtype).min
        if self.config.attention == "target":
            ce = c[:, None, :].expand_as(hh)
            # RAGAR prior: attention starts as a softmax over similarity to the candidate
            a = self.att(torch.cat([hh, ce, hh * ce, hh - ce], -1))[..., 0] + self.sim_scale * sim
            w = torch.softmax(a.masked_fill(~mask, neg), -1) * mask
        else:
            w = mask.to(sim.dtype)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        has = mask.any(-1, keepdim=True).to(sim.dtype)
        # cosine between the candidate and the attention-weighted history (the normalised
        # preference embedding, as the cosine baseline computes it, but with learned weights)
        sim_w = torch.where(has > 0, (unit * nn.functional.normalize(pref_of(w), dim=-1)).sum(-1, keepdim=True),
                            torch.zeros_like(has))
        # the retrieval-weighted preference cosine (RAGAR's weights, exactly as recsys.preference
        # computes them), or the uniform-history cosine in the uniform variant: differentiable in cand
        method = "ragar" if self.config.attention == "target" else "uniform"
        w_pref = preference_weights(sim.masked_fill(~mask, float("nan")), mask, self.preference.model_copy(
            update={"method": method}))
        cos_pref = torch.where(has > 0, (unit * nn.functional.normalize(pref_of(w_pref), dim=-1)).sum(-1, keepdim=True),
                               torch.zeros_like(has))
        sim_max = torch.where(has > 0, sim.masked_fill(~mask, -1.0).amax(-1, keepdim=True), torch.zeros_like(has))
        if self.config.attention == "mean":
            sim_max = torch.zeros_like(sim_max)  # the uniform variant sees the mean similarity only
        if skip_sim is None:
            skip_feats = torch.zeros(len(has), 2, dtype=has.dtype, device=has.device)
        else:
            sm = skip_mask.bool()
            any_skip = sm.any(-1, keepdim=True)
            k_mean = (skip_sim * sm).sum(-1, keepdim=True) / sm.sum(-1, keepdim=True).clamp_min(1)
            k_max = skip_sim.masked_fill(~sm, -1.0).amax(-1, keepdim=True)
            if self.config.attention == "mean":
                k_max = k_mean
            skip_feats = torch.where(any_skip, torch.cat([k_mean, k_max], -1), torch.full_like(k_mean, -1.0)
                                     .expand(-1, 2))
        # the head reads user x candidate similarities only: no candidate-only term, so it cannot
        # memorise per-item click rates (noise for images it has never seen, e.g. generated ones);
        # a learned c * interest term was tried and made test NDCG worse and unstable
        parts = [has, sim_w, sim_max, cos_pref, skip_feats]
        if self.config.n_stats:
            if stats is None:
                raise ValueError(f"this ranker needs {self.config.n_stats} stats features")
            parts.append(stats)
        return self.head(torch.cat(parts, -1))[:, 0]

    def click_probability(self, logits: torch.Tensor, position: torch.Tensor | int = 0) -> torch.Tensor:
        """Calibrated click probability of a candidate shown at ``position`` (default: the top)."""
        pos = torch.as_tensor(position).clamp(0, len(self.position_logit) - 1)
        return torch.sigmoid(logits) * torch.sigmoid(self.position_logit[pos])

    def log_likelihood_loss(self, logits: torch.Tensor, position: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the factorised click model (computed in log space)."""
        pos = position.clamp(0, len(self.position_logit) - 1)
        log_p = nn.functional.logsigmoid(logits) + nn.functional.logsigmoid(self.position_logit[pos])
        log_not = torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
        return -(labels * log_p + (1 - labels) * log_not).mean()


def train_din(model: DINRanker, cand: np.ndarray, hist_pos: np.ndarray, hist_mask: np.ndarray, stats: np.ndarray,
              labels: np.ndarray, position: np.ndarray, image_table: np.ndarray, item_table: np.ndarray,
              skip_pos: np.ndarray | None = None, skip_mask: np.ndarray | None = None,
              request_row: np.ndarray | None = None, epochs: int = 4, batch_size: int = 1024, lr: float = 3e-3,
              seed: int = 0, progress: bool = False, device: torch.device | str = "cpu") -> list[float]:
    """Maximum likelihood of the position-factorised click model; returns each epoch's mean loss.
    Trains on ``device`` (the batches are drawn on the CPU, so a seed gives the same order
    anywhere) and leaves the model on the CPU.

    ``hist_*`` / ``skip_*`` are per request and ``request_row`` maps each sample to its request
    (None: one request per sample), so a slate's history is stored once, not once per impression."""

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    # the backward of the history gathers accumulates with duplicate indices (index_put_ /
    # scatter_add); without this the float summation order follows thread scheduling and two runs
    # with the same seed drift apart
    device = torch.device(device)
    if device.type == "cuda":  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        return _train_din(model.to(device), cand, hist_pos, hist_mask, stats, labels, position, image_table,
                          item_table, skip_pos, skip_mask, request_row, epochs, batch_size, lr, seed, progress, device)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        model.cpu()


def _train_din(model, cand, hist_pos, hist_mask, stats, labels, position, image_table, item_table, skip_pos,
               skip_mask, request_row, epochs, batch_size, lr, seed, progress, device) -> list[float]:
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    table, itable = torch.from_numpy(item_table).to(device), torch.from_numpy(image_table).to(device)
    per_req = _per_request(hist_pos, hist_mask, skip_pos, skip_mask)
    rr = torch.from_numpy(np.arange(len(cand)) if request_row is None else np.asarray(request_row, np.int64))
    per_sample = [torch.from_numpy(a) for a in (cand, stats, labels.astype(np.float32), position.astype(np.int64))]
    n = len(labels)
    rank, world = _data_parallel()
    losses = []
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for lo in tqdm(range(0, n, batch_size), desc=f"din epoch {ep + 1}", disable=not progress or rank > 0):
            batch = perm[lo:lo + batch_size]
            idx = batch[rank::world]  # data parallel: this process's slice of the same global batch
            c, st, y, ps = (t[idx].to(device) for t in per_sample)
            hp, hm, kp, km = (t[rr[idx]].to(device) for t in per_req)
            # summed over the slice and divided by the global batch size, so the all-reduced gradient
            # is the gradient of the global batch mean whatever the slice sizes
            if len(idx):
                nll = model.log_likelihood_loss(model.forward_positions(c, hp, hm, itable, table, st, kp, km), ps, y)
                loss = nll * (len(idx) / len(batch))
            else:  # a last batch smaller than the process count: this process adds nothing
                loss = sum((p * 0).sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            if world > 1:
                _all_reduce_sum([p.grad for p in model.parameters() if p.grad is not None])
                loss = _all_reduce_sum([loss.detach()])[0]
            opt.step()
            total += loss.item() * len(batch)
        losses.append(total / n)
    model.eval()
    return losses


def _data_parallel() -> tuple[int, int]:
    """(rank, world size) of the process group a launcher (``accelerate launch``) formed, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    for t in tensors:
        torch.distributed.all_reduce(t)
    return tensors


def _per_request(hist_pos, hist_mask, skip_pos, skip_mask) -> list[torch.Tensor]:
    if skip_pos is None:
        skip_pos = np.full((len(hist_pos), 1), -1, np.int64)
        skip_mask = np.zeros((len(hist_pos), 1), bool)
    return [torch.from_numpy(np.asarray(a)) for a in (hist_pos, hist_mask, skip_pos, skip_mask)]


@torch.no_grad()
def predict_logits(model: DINRanker, cand, hist_pos, hist_mask, stats, image_table, item_table,
                   skip_pos=None, skip_mask=None, request_row=None, batch_size: int = 4096) -> np.ndarray:
    """Logits of the content tower; history arrays per request as in :func:`train_din`."""
    table = torch.from_numpy(np.asarray(item_table))
    itable = torch.from_numpy(np.asarray(image_table))
    per_req = _per_request(hist_pos, hist_mask, skip_pos, skip_mask)
    rr = np.arange(len(cand)) if request_row is None else np.asarray(request_row, np.int64)
    out = []
    for lo in range(0, len(cand), batch_size):
        sl = slice(lo, lo + batch_size)
        r = torch.from_numpy(rr[sl])
        hp, hm, kp, km = (t[r] for t in per_req)
        out.append(model.forward_positions(torch.from_numpy(cand[sl]), hp, hm, itable, table,
                                           torch.from_numpy(stats[sl]), kp, km).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
