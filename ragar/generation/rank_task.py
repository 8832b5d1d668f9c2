"""The rank task: fine-tune the generator so the frozen ranker prefers what it makes for each user.

For a sub-batch of training pairs (noisy target ``x_t`` at step ``t``, reference ``r_i``, user
``i``'s preference ``p_i``), the UNet predicts the clean image twice from the same ``x_t``: once
with ``p_i`` (``x̂_i``) and once with another pair's preference ``p_j`` (``x̂_j``), both for the
same reference. The frozen differentiable ranker scores both *for user i* through the same image
encoder the catalog was embedded with, and the pairwise loss

    L_rank = softplus(s_i(x̂_j) - s_i(x̂_i))

pushes the image generated from the user's own preference above the one generated from someone
else's: the ranking signal of the logs, not only a pull toward the target pixels. It is added to
the diffusion loss with ``rank_weight``, only where ``t`` is small enough for ``x̂`` to be an
image (``rank_max_t``). Everything but the generator is frozen; gradients flow through the image
encoder into the UNet and the adapter.
"""

from __future__ import annotations

import copy
from datetime import datetime

import torch
from torch import nn

from recsys.ranking.scoring import PreferenceScorer, UserInputs


class RankTask:
    """Holds the frozen ranker, the frozen differentiable image encoder and each pair's user inputs."""

    def __init__(self, scorer: PreferenceScorer, image_model: nn.Module, image_size: int, user_ids: list[str],
                 as_of: list[datetime]):
        self.scorer = scorer
        self.image_model = image_model.eval().requires_grad_(False)
        self.scorer.model.eval().requires_grad_(False)
        self.image_size = image_size
        self.inputs: UserInputs = scorer.user_inputs(user_ids, as_of)
        self.anchor: tuple[nn.Module, nn.Module] | None = None  # frozen starting (unet, adapter): consistency

    def to(self, device: torch.device | str) -> RankTask:
        """The frozen ranker, image encoder and user inputs on the generator's training device in
        float32 (they take part in the backward pass). The image model is copied first when it must
        move: it may be an encoder other code still uses where it is."""
        p = next(self.image_model.parameters())
        if p.device != torch.device(device) or p.dtype != torch.float32:
            self.image_model = copy.deepcopy(self.image_model).to(device, torch.float32)
        self.scorer.to(device)
        self.inputs = self.inputs.to(device)
        if self.anchor is not None:
            self.anchor = tuple(m.to(device) for m in self.anchor)
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable image embedding of ``x`` in [-1, 1]: the encoder's preprocessing
        ((x01 - 0.5) / 0.5 is x itself), resize, pooled last-layer features."""
        x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                      align_corners=False)
        return self.image_model.extract_features(x).mean(dim=(2, 3))

    def loss(self, own: torch.Tensor, other: torch.Tensor, pair_rows: torch.Tensor) -> torch.Tensor:
        """``own`` / ``other``: (B, 3, S, S) predicted clean images for the pairs ``pair_rows``."""
        emb = self.embed(torch.cat([own, other]).clamp(-1, 1))
        b = len(pair_rows)
        cand = torch.stack([emb[:b], emb[b:]], 1)  # (B, 2, D): own, other
        logits = self.scorer.logits(self.inputs.take(pair_rows), cand)
        return nn.functional.softplus(logits[:, 1] - logits[:, 0]).mean()

    def win_rate(self, own: torch.Tensor, other: torch.Tensor, pair_rows: torch.Tensor) -> float:
        with torch.no_grad():
            emb = self.embed(torch.cat([own, other]).clamp(-1, 1))
            b = len(pair_rows)
            logits = self.scorer.logits(self.inputs.take(pair_rows), torch.stack([emb[:b], emb[b:]], 1))
        return float((logits[:, 0] > logits[:, 1]).float().mean())


def predicted_clean(scheduler, xt: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x̂_0 from the model's output, as the scheduler's ``prediction_type`` reads it:
    (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) for ``epsilon``, sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v̂ for
    ``v_prediction``."""
    a = scheduler.alphas_cumprod.to(xt.device)[t].view(-1, 1, 1, 1)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (xt - (1 - a).sqrt() * out) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * xt - (1 - a).sqrt() * out
    raise ValueError(f"unsupported prediction_type {kind!r}")
