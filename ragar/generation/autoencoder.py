"""The generator's autoencoder: a small diffusers ``AutoencoderTiny`` trained from scratch on world
renders, so the UNet denoises 32x32x4 latents of 64-px images instead of 64x64x3 pixels.

Why latents: on 2 CPU cores one request (4 candidates x 3 guidance branches x 25 steps) costs
11.7 s in 64-px pixel space with the reference concatenated (issue #19's measurement; ``make
bench`` for today's). A TAESD-shaped autoencoder with fewer channels reconstructs the renders (flat
shapes with stripes, dots and checks). Its reconstruction quality (PSNR, identity cosine of
reconstructions) is reported beside the generator. One halving, not two: a 16x16x4 latent of the
same autoencoder trained as long reached 26.9 dB held-out PSNR and lost chair legs, handles and
dots (docs/GENERATION.md), which no generator on top could bring back.

The latents are scaled by ``config.scaling_factor`` (1 / their standard deviation on the training
renders, fitted after training) so the diffusion noise schedule sees unit-variance data, as Stable
Diffusion's VAE does; :func:`encode` and :func:`decode` apply it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ragar.generation.configs import AutoencoderConfig


def build_autoencoder(cfg: AutoencoderConfig):
    from diffusers import AutoencoderTiny

    n = len(cfg.encoder_blocks)
    return AutoencoderTiny(in_channels=3, out_channels=3, encoder_block_out_channels=(cfg.channels,) * n,
                           decoder_block_out_channels=(cfg.decoder_channels or cfg.channels,) * n,
                           latent_channels=cfg.latent_channels,
                           num_encoder_blocks=tuple(cfg.encoder_blocks), num_decoder_blocks=tuple(cfg.decoder_blocks))


def downscale_of(vae) -> int:
    """How many pixels one latent covers per side."""
    return 2 ** (len(vae.config.encoder_block_out_channels) - 1)


def encode(vae, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> scaled latents (N, C, S/f, S/f), in batches."""
    dtype, device = vae.dtype, vae.device
    out = [vae.encode(images[i:i + batch_size].to(device, dtype)).latents
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) * vae.config.scaling_factor


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (differentiable: the rank task backpropagates through it)."""
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [-1, 1] on the 8-bit scale."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio((a + 1) / 2, (b + 1) / 2, data_range=1.0, reduction="none", dim=(1, 2, 3))


def _init_from(vae, init, cfg: AutoencoderConfig) -> None:
    """``init``'s weights and latent scale into ``vae``. With a frozen encoder the decoder may differ
    in shape (a wider one for the same latents): it then starts from scratch; the encoder must match."""
    same = {k: v.shape for k, v in vae.state_dict().items()} == {k: v.shape for k, v in init.state_dict().items()}
    if same:
        vae.load_state_dict(init.state_dict())
    elif not cfg.freeze_encoder:
        raise ValueError(f"autoencoder.init_from={cfg.init_from} has another shape than this config; only a new "
                         "decoder on a kept encoder may differ (set autoencoder.freeze_encoder=true)")
    else:
        try:
            vae.encoder.load_state_dict(init.encoder.state_dict())
        except RuntimeError:
            raise ValueError(f"autoencoder.init_from={cfg.init_from}: its encoder differs from this config's "
                             "(channels, encoder_blocks and latent_channels must match)") from None
    vae.register_to_config(scaling_factor=init.config.scaling_factor)


def train_autoencoder(images: torch.Tensor, out: str | Path, cfg: AutoencoderConfig, held_out: int = 256,
                      progress: bool = True, device: str | torch.device = "cpu", provenance: dict | None = None
                      ) -> dict:
    """Train on ``images`` ((N, 3, S, S) uint8 renders; the last ``held_out`` are kept for the
    report), fit the latent scaling factor, save with ``save_pretrained(out)`` and return a summary
    (loss, held-out PSNR, scaling factor, seconds). L1 + MSE on pixels: the renders are flat colour
    regions with sharp edges, where L1 keeps edges that MSE alone blurs."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim
    from tqdm.auto import tqdm

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"autoencoder training images must be (N, 3, S, S) uint8, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if images.shape[-1] != cfg.image_size:
        raise ValueError(f"images are {images.shape[-1]} px but autoencoder.image_size is {cfg.image_size}")
    held_out = min(held_out, len(images) // 5)
    train, test = images[:len(images) - held_out], images[len(images) - held_out:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    vae = build_autoencoder(cfg)
    if cfg.init_from:
        _init_from(vae, load_autoencoder(cfg.init_from), cfg)
    vae = vae.to(device).train()
    if cfg.freeze_encoder:
        if not cfg.init_from:
            raise ValueError("autoencoder.freeze_encoder needs autoencoder.init_from (an encoder to keep)")
        vae.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.learning_rate,
                            weight_decay=1e-5)
    # warm up over 5% of the steps, at least 2 (OneCycleLR divides by zero when the warm-up is 1 step)
    warm = min(0.3, max(0.05, 2 / cfg.steps))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=cfg.steps, pct_start=warm)
    g = torch.Generator().manual_seed(cfg.seed)
    losses, t0 = [], time.perf_counter()
    for _ in tqdm(range(cfg.steps), desc="train autoencoder", disable=not progress):
        idx = torch.randint(len(train), (cfg.batch_size,), generator=g)
        x = train[idx].to(device).float() / 127.5 - 1
        flip = torch.rand(len(x), generator=g) < 0.5  # the renders are lit from either side
        x = torch.where(flip[:, None, None, None].to(device), x.flip(-1), x)
        z = vae.encode(x).latents
        if cfg.decoder_noise > 0:  # in scaled-latent units; the decoder reads unscaled latents
            sigma = torch.rand(len(z), 1, 1, 1, generator=g).to(device) * cfg.decoder_noise
            z = z + sigma * torch.randn(z.shape, generator=g).to(device) / vae.config.scaling_factor
        y = vae.decode(z).sample
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean()
        if cfg.ssim_weight > 0:
            loss = loss + cfg.ssim_weight * (1 - ssim((y + 1) / 2, (x + 1) / 2, data_range=1.0, kernel_size=7))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    vae.eval()
    with torch.no_grad():
        sample = train[torch.randperm(len(train), generator=g)[:1024]].to(device).float() / 127.5 - 1
        if not cfg.freeze_encoder:  # a kept encoder keeps its scale: the generator's latents stay as they were
            vae.register_to_config(scaling_factor=1.0)  # fit on the raw latents
            vae.register_to_config(scaling_factor=float(1.0 / encode(vae, sample).std()))
        x = test.to(device).float() / 127.5 - 1
        z = encode(vae, x)
        rec = decode(vae, z)
        quality = psnr(rec.cpu(), x.cpu())
        noisy = psnr(decode(vae, z + 0.2 * torch.randn(z.shape, generator=g).to(device)).cpu(), x.cpu())
    vae.save_pretrained(out, safe_serialization=True)
    drop_unread_config(out)
    summary = {"config": cfg.model_dump(), "steps": cfg.steps, "images": len(train), "held_out": len(test),
               "first_loss": float(np.mean(losses[:20])), "final_loss": float(np.mean(losses[-20:])),
               "psnr_held_out": float(quality.mean()), "psnr_held_out_min": float(quality.min()),
               "psnr_held_out_latent_noise_0.2": float(noisy.mean()),
               "scaling_factor": vae.config.scaling_factor, "seconds": time.perf_counter() - t0,
               "device": str(device), "torch_threads": torch.get_num_threads(), **(provenance or {})}
    (out / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def drop_unread_config(path: str | Path) -> None:
    """AutoencoderTiny records a ``block_out_channels`` its ``__init__`` does not take, so every
    load of a saved one (diffusers 0.42, including a pipeline's ``vae/``) warns that it "will be
    ignored". The key is dropped from the saved ``config.json``: nothing reads it."""
    cfg = Path(path) / "config.json"
    d = json.loads(cfg.read_text())
    if d.get("_class_name") == "AutoencoderTiny" and d.pop("block_out_channels", None) is not None:
        cfg.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def load_autoencoder(path: str | Path, torch_dtype: torch.dtype = torch.float32):
    """A trained autoencoder directory (``config.json`` + safetensors; nothing is unpickled)."""
    from diffusers import AutoencoderTiny
    from diffusers.utils import logging

    # AutoencoderTiny records a block_out_channels its __init__ does not take, so every load of a
    # saved one warns that it "will be ignored" (diffusers 0.42): true and harmless, hidden here
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return AutoencoderTiny.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True).eval()
    finally:
        logging.set_verbosity(level)


def world_renders(root: str | Path, image_size: int, limit: int | None = None, seed: int = 0) -> torch.Tensor:
    """Every view and distractor render of a world as (N, 3, S, S) uint8, shuffled with ``seed``
    (the autoencoder's training set; distractors add part variants the catalog lacks)."""
    import polars as pl
    from PIL import Image

    from recsys.data.images import load_rgb

    root = Path(root)
    paths = pl.read_parquet(root / "views.parquet")["image"].to_list()
    order = np.random.default_rng(seed).permutation(len(paths))[:limit]
    arr = np.stack([load_rgb(root / paths[i], size=image_size, resample=Image.BICUBIC) for i in order])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
