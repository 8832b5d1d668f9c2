"""Hugging Face CLIP / SigLIP image towers, the real path: ``from_pretrained(local_dir)`` only,
never a hub download (``local_files_only=True``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ragar.encoders.base import ImageEncoder, ImageLike, fingerprint, to_batch


class HFVisionEncoder(ImageEncoder):
    """``kind`` is 'clip' or 'siglip'; the directory holds the model (and optionally the image
    processor config, from which size, mean and std are read)."""

    def __init__(self, path: str | Path, kind: str = "clip"):
        from transformers import AutoConfig

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{kind} model directory {path} does not exist")
        self.kind = kind
        self.name = f"{kind}:{path.name}"
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        if kind == "clip":
            from transformers import CLIPModel as M
        elif kind == "siglip":
            from transformers import SiglipModel as M
        else:
            raise ValueError(f"unknown HF vision kind {kind!r} (clip or siglip)")
        self.model = M.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        vc = cfg.vision_config
        self.image_size = int(vc.image_size)
        self.mean, self.std = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
        if kind == "siglip":
            self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        pp = path / "preprocessor_config.json"
        if pp.exists():
            import json

            p = json.loads(pp.read_text())
            self.mean = tuple(p.get("image_mean", self.mean))
            self.std = tuple(p.get("image_std", self.std))
        self.dim = int(getattr(cfg, "projection_dim", None) or vc.hidden_size)
        self._fp = fingerprint(self.name, {"size": self.image_size, "mean": self.mean, "std": self.std},
                               dict(list(self.model.state_dict().items())[:8]))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _embed(self, batch: Sequence[ImageLike]) -> torch.Tensor:
        x = self._on_device(to_batch(batch, self.image_size, self.mean, self.std, device=self.device))
        out = self.model.get_image_features(pixel_values=x)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
