"""A small image encoder trained on the world with a contrastive loss (the no-download option).

Two different views of the same item (pose, scale, background and lighting differ) are positives;
every other item in the batch is a negative, including the same identity in another style and
other identities in the same style, so the embedding learns identity *and* style and ignores the
camera. Symmetric InfoNCE (CLIP-style) at temperature 0.1.

Saved like a Hugging Face model: ``model.safetensors`` + ``config.json``; loaded by the registry as
``contrastive:<dir>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from ragar.encoders.base import ImageEncoder, ImageLike, fingerprint, load_rgb, to_batch
from recsys.modeling import PretrainedMixin

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass
class SmallConvConfig:
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 192)
    dim: int = 128


class SmallConvNet(PretrainedMixin, nn.Module):
    config_class = SmallConvConfig
    model_type = "small-conv"

    def __init__(self, config: SmallConvConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.GELU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.GELU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean(dim=(2, 3)))


class ContrastiveImageEncoder(ImageEncoder):
    def __init__(self, path: str | Path):
        self.model = SmallConvNet.from_pretrained(path).requires_grad_(False)
        self.name = f"contrastive:{Path(path).name}"
        self.dim = self.model.config.dim
        self.image_size = self.model.config.image_size
        self._fp = fingerprint(self.name, asdict(self.model.config), self.model.state_dict())

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _embed(self, batch: Sequence[ImageLike]) -> torch.Tensor:
        return self.model(self._on_device(to_batch(batch, self.image_size, MEAN, STD, device=self.device)))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random resized crop (70-100% of the side), per image."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    s = 0.7 + 0.3 * torch.rand(b, generator=g)
    cx, cy = (1 - s) * (2 * torch.rand(b, generator=g) - 1), (1 - s) * (2 * torch.rand(b, generator=g) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, cx, cy
    grid = nn.functional.affine_grid(theta, (b, 3, h, w), align_corners=False)
    return nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border")


def train_contrastive_encoder(root: str | Path, out: str | Path, steps: int = 400, batch_size: int = 64,
                              lr: float = 2e-3, config: SmallConvConfig | None = None, seed: int = 0,
                              progress: bool = True, device: torch.device | str = "cpu") -> list[float]:
    """Train on a world directory (``views.parquet``) on ``device``; returns the loss of each step."""
    from tqdm.auto import tqdm

    root = Path(root)
    views = pl.read_parquet(root / "views.parquet").filter(pl.col("kind") == "view")
    by_item = views.group_by("item_id", maintain_order=True).agg(pl.col("image"))
    paths = by_item["image"].to_list()
    if len(paths) < 2 or min(len(p) for p in paths) < 2:
        raise ValueError("contrastive training needs at least 2 items with 2 views each")
    config = config or SmallConvConfig()
    size = config.image_size
    # decode every view once (the world is small at this resolution): (items, views, 3, S, S)
    cache = [to_batch([load_rgb(root / p) for p in ps], size, MEAN, STD) for ps in paths]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SmallConvNet(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    n = len(cache)
    model.train()
    for _ in tqdm(range(steps), desc="contrastive encoder", disable=not progress):
        idx = torch.randperm(n, generator=g)[: min(batch_size, n)]
        a, b = [], []
        for i in idx.tolist():
            v = torch.randperm(len(cache[i]), generator=g)[:2]
            a.append(cache[i][v[0]])
            b.append(cache[i][v[1]])
        za = nn.functional.normalize(model(_augment(torch.stack(a), g).to(device)), dim=-1)
        zb = nn.functional.normalize(model(_augment(torch.stack(b), g).to(device)), dim=-1)
        logits = za @ zb.T / 0.1
        target = torch.arange(len(idx), device=logits.device)
        loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval().save_pretrained(out)
    (Path(out) / "training.json").write_text(json.dumps({
        "data": str(root), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "first_loss": float(np.mean(losses[:10])), "final_loss": float(np.mean(losses[-10:]))}, indent=2))
    return losses
