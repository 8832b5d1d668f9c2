"""The preference adapter: projects the reference embedding and the preference embedding each to K
cross-attention tokens (IP-Adapter style), so the UNet sees them separately and inference can guide
on each with its own scale. Learned null tokens stand in for a dropped condition, which is what
classifier-free guidance contrasts against."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

#: what an adapter directory written before it became a diffusers model holds
LEGACY_WEIGHTS = "model.safetensors"


@dataclass
class AdapterConfig:
    """The adapter's sizes (``PreferenceAdapter(**asdict(cfg))``)."""

    embed_dim: int
    cross_attention_dim: int
    tokens: int = 4


class PreferenceAdapter(ModelMixin, ConfigMixin):
    """A diffusers model (``ModelMixin`` + ``ConfigMixin``), so ``RagarPipeline`` saves and loads
    it through diffusers' own machinery (``model_index.json``), dtype handling included."""

    @register_to_config
    def __init__(self, embed_dim: int, cross_attention_dim: int, tokens: int = 4):
        super().__init__()
        k, c = tokens, cross_attention_dim
        self.reference_proj = nn.Linear(embed_dim, k * c)
        self.preference_proj = nn.Linear(embed_dim, k * c)
        self.norm = nn.LayerNorm(c)
        self.kind = nn.Parameter(torch.zeros(2, 1, c))  # tells the UNet which tokens are which
        self.null_reference = nn.Parameter(torch.zeros(k, c))
        self.null_preference = nn.Parameter(torch.zeros(k, c))

    @classmethod
    def from_sizes(cls, config: AdapterConfig) -> PreferenceAdapter:
        return cls(**asdict(config))

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs) -> PreferenceAdapter:
        """diffusers' loader, or the format written before (``config.json`` with ``type`` and
        ``model.safetensors``): both read only safetensors and JSON."""
        p = Path(path)
        if (p / LEGACY_WEIGHTS).exists() and not (p / "diffusion_pytorch_model.safetensors").exists():
            from safetensors.torch import load_file

            raw = json.loads((p / "config.json").read_text())
            if raw.pop("type", "preference-adapter") != "preference-adapter":
                raise ValueError(f"{p} holds a different kind of model, not a preference adapter")
            model = cls(**raw)
            model.load_state_dict(load_file(str(p / LEGACY_WEIGHTS)), strict=True)
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            return (model.to(dtype) if dtype not in (None, torch.float32) else model).eval()
        kwargs.setdefault("local_files_only", True)
        return super().from_pretrained(path, *args, **kwargs)

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
