"""How much of an image survives the generator's autoencoder: the ceiling on what a latent
generator can return. PSNR says how close the pixels are; the identity encoder's cosine between a
render and its reconstruction says whether the object still reads as itself (the thin parts a
coarse latent grid loses show up there first, not in PSNR)."""

from __future__ import annotations

import numpy as np
import torch

from eval.metrics.intervals import bootstrap_ci
from ragar.encoders.base import ImageEncoder
from ragar.generation.autoencoder import decode, downscale_of, encode, psnr


@torch.no_grad()
def reconstructions(vae, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> their reconstructions, uint8."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(vae.device, vae.dtype) / 127.5 - 1
        out.append(((decode(vae, encode(vae, x)).float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)


def evaluate_autoencoder(vae, images: torch.Tensor, identity_encoder: ImageEncoder | None = None,
                         seed: int = 0) -> dict:
    """Per-image PSNR and (with ``identity_encoder``) identity cosine of reconstructions of
    ``images`` ((N, 3, S, S) uint8), as means with 95% bootstrap intervals, plus the worst image."""
    rec = reconstructions(vae, images)
    db = psnr(rec.float() / 127.5 - 1, images.float() / 127.5 - 1).numpy()
    out = {"images": len(images), "image_size": int(images.shape[-1]),
           "latent_shape": [vae.config.latent_channels, *[images.shape[-1] // downscale_of(vae)] * 2],
           "psnr": _summary(db, seed)}
    if identity_encoder is not None:
        hwc = lambda x: list(x.permute(0, 2, 3, 1).numpy())  # noqa: E731
        a, b = identity_encoder.encode(hwc(images)), identity_encoder.encode(hwc(rec))
        cos = np.sum(a * b, axis=1)  # the encoders' rows are unit-norm
        out["identity_cos"] = _summary(cos, seed)
    return out


def _summary(v: np.ndarray, seed: int) -> dict:
    mean, lo, hi = bootstrap_ci(v, seed=seed)
    return {"mean": mean, "ci": [lo, hi], "min": float(v.min())}
