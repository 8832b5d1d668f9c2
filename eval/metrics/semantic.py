"""Semantic (to the reference) and personalization (to the user) metrics, torchmetrics-shaped.

- ``EmbeddingSimilarity``: image-image cosine in an encoder's space ×100 — the CLIP-I / DINO
  convention of DreamBench++ (the encoder is whichever produced the embeddings).
- ``HistorySimilarity``: the same cosine ×100 against each item of the user's history, averaged
  over the history — the "Hist" metrics as Pigeon reports them (how much the image looks like
  what this user engaged with).
- SSIM: ``torchmetrics.functional.structural_similarity_index_measure`` (``ssim`` below resizes
  both sides to one size first).

Each class has ``update``/``compute``/``reset`` with declared states and a functional twin.
"""

from __future__ import annotations

import torch
from torchmetrics.aggregation import MeanMetric
from torchmetrics.functional.image import structural_similarity_index_measure

from eval.metrics._inputs import unit_rows


def embedding_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine ×100 of (N, D) embeddings."""
    a, b = unit_rows(a, "embeddings"), unit_rows(b, "embeddings")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return 100 * (a * b).sum(-1)


class EmbeddingSimilarity(MeanMetric):
    """Mean of :func:`embedding_similarity` over ``update(a, b)`` calls."""

    higher_is_better = True

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:  # type: ignore[override]
        super().update(embedding_similarity(a, b))


def history_similarity(generated: torch.Tensor, history: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """(N,) mean cosine ×100 of each generated embedding (N, D) to its history (N, H, D); rows with
    no history are NaN (no evidence either way)."""
    g, h = unit_rows(generated, "generated embeddings"), unit_rows(history, "history embeddings")
    mask = torch.ones(h.shape[:2], dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    s = torch.einsum("nd,nhd->nh", g, h) * mask
    n = mask.sum(1)
    return torch.where(n > 0, 100 * s.sum(1) / n.clamp_min(1), torch.full_like(n, float("nan"), dtype=s.dtype))


class HistorySimilarity(MeanMetric):
    """Mean of :func:`history_similarity` over requests that have a history (empty ones are skipped)."""

    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(nan_strategy="ignore", **kwargs)

    def update(self, generated: torch.Tensor, history: torch.Tensor,  # type: ignore[override]
               mask: torch.Tensor | None = None) -> None:
        super().update(history_similarity(generated, history, mask))


def ssim(a: torch.Tensor, b: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Per-pair SSIM of uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1] images; both sides are
    resized to ``size`` (default: the smaller of the two) first."""
    def prep(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).float() / 255
        return x.float()

    a, b = prep(a), prep(b)
    s = size or min(a.shape[-1], b.shape[-1])
    rs = lambda x: x if x.shape[-1] == s else torch.nn.functional.interpolate(  # noqa: E731
        x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    return structural_similarity_index_measure(rs(a), rs(b), data_range=1.0, reduction="none")
