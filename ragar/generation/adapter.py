"""The preference adapter: projects the reference embedding and the preference embedding each to K
cross-attention tokens (IP-Adapter style), so the UNet sees them separately and inference can guide
on each with its own scale. Learned null tokens stand in for a dropped condition, which is what
classifier-free guidance contrasts against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.modeling import PretrainedMixin


@dataclass
class AdapterConfig:
    embed_dim: int
    cross_attention_dim: int
    tokens: int = 4


class PreferenceAdapter(PretrainedMixin, nn.Module):
    config_class = AdapterConfig
    model_type = "preference-adapter"

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        k, c = config.tokens, config.cross_attention_dim
        self.reference_proj = nn.Linear(config.embed_dim, k * c)
        self.preference_proj = nn.Linear(config.embed_dim, k * c)
        self.norm = nn.LayerNorm(c)
        self.kind = nn.Parameter(torch.zeros(2, 1, c))  # tells the UNet which tokens are which
        self.null_reference = nn.Parameter(torch.zeros(k, c))
        self.null_preference = nn.Parameter(torch.zeros(k, c))

    def forward(self, reference: torch.Tensor, preference: torch.Tensor, drop_reference: torch.Tensor | None = None,
                drop_preference: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) embeddings -> (B, 2K, C) tokens; ``drop_*`` (B,) bool replaces that condition by
        its null tokens (training dropout, and the unconditional branches of guidance)."""
        d = self.config.embed_dim
        for name, x in (("reference", reference), ("preference", preference)):
            if x.ndim != 2 or x.shape[1] != d:
                raise ValueError(f"{name} embeddings must be (B, {d}), got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise ValueError(f"{name} embeddings contain NaN or inf")
        b, k, c = len(reference), self.config.tokens, self.config.cross_attention_dim
        r = self.norm(self.reference_proj(reference).view(b, k, c))
        p = self.norm(self.preference_proj(preference).view(b, k, c))
        if drop_reference is not None:
            r = torch.where(drop_reference[:, None, None], self.null_reference.expand(b, k, c), r)
        if drop_preference is not None:
            p = torch.where(drop_preference[:, None, None], self.null_preference.expand(b, k, c), p)
        return torch.cat([r + self.kind[0], p + self.kind[1]], dim=1)
