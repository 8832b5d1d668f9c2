"""Synthetic training data for a personalized encoder (seed paper 004), from a few real images.

Three sources, as the paper mixes them:

* **paste-on-background** (the paper's Cut-and-Paste): the object is cut from each real image and
  pasted, rotated, scaled, shifted and mirrored, onto new backgrounds. Faithful to every detail of
  the object, little variety of its appearance.
* **generated positives**: the generator renders the real images as the reference with other
  styles as the preference (``reference`` + ``preference`` conditioning, so the same object in
  another palette and pattern, in new poses). Varied, less faithful: this is the DreamBooth half.
* **generated negatives**: other objects that look most like it (its nearest catalog items by
  image), rendered in *its* style, so "same colours" stops being evidence of "same object".

The cut needs no segmentation model: product shots stand on a plain background, so every row's
background colour is read from the left and right borders (which also follows a vertical gradient)
and what differs from it by more than a threshold is the object. A photo on a busy background is
not cut well by this; pass ``--no-paste`` or crop it first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ragar.encoders.base import ImageInputError, ImageLike, load_rgb


def read_real_images(images: Sequence[ImageLike], max_images: int = 64) -> list[np.ndarray]:
    """Decode the user's real images, refusing what a personalized encoder cannot be trained on:
    none at all, anything that is not an image, and images of different sizes (the same object
    photographed at one size; resize them consistently first)."""
    if len(images) < 1:
        raise ValueError("a personalized encoder needs at least 1 real image of the object (3 recommended)")
    if len(images) > max_images:
        raise ValueError(f"{len(images)} images given; at most {max_images}")
    rgbs = [load_rgb(im) for im in images]  # ImageInputError names the file that is not an image
    sizes = sorted({(a.shape[1], a.shape[0]) for a in rgbs})
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sizes)
        raise ImageInputError(f"the real images have mixed sizes ({listed}); give images of one size")
    if min(sizes[0]) < 16:
        raise ImageInputError(f"images of {sizes[0][0]}x{sizes[0][1]} are too small (at least 16x16)")
    return rgbs


def object_mask(rgb: np.ndarray, threshold: float = 30.0, border: int = 2) -> np.ndarray:
    """(H, W) bool: pixels that differ from their row's background colour by more than
    ``threshold`` (RGB distance). The background of a row is the median of its ``border`` leftmost
    and rightmost pixels. Returns an all-False mask when nothing stands out."""
    x = rgb.astype(np.float32)
    edges = np.concatenate([x[:, :border], x[:, -border:]], axis=1)  # (H, 2*border, 3)
    bg = np.median(edges, axis=1)                                   # (H, 3)
    dist = np.linalg.norm(x - bg[:, None, :], axis=-1)
    mask = dist > threshold
    mask = ndimage.binary_opening(mask, iterations=1)
    # keep the largest connected part and what touches it (a handle is connected to its mug)
    lab, n = ndimage.label(ndimage.binary_dilation(mask, iterations=1))
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
        mask &= lab == (1 + int(np.argmax(sizes)))
    return mask


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A plain, desaturated background with a soft vertical gradient (H, W, 3) float in 0..255."""
    grey = rng.uniform(60, 240)
    tint = rng.normal(0, 12, 3)
    col = np.clip(grey + tint, 0, 255)
    ramp = 1.0 - rng.uniform(0.0, 0.15) * np.linspace(0, 1, size)[:, None, None]
    return np.broadcast_to(col, (size, size, 3)) * ramp


def paste_on_backgrounds(images: Sequence[np.ndarray], n: int, seed: int = 0, threshold: float = 30.0
                         ) -> list[np.ndarray]:
    """``n`` images: the object of each real image in turn, cut out and pasted with a random
    rotation (±25°), scale (0.75-1.15), shift and mirror onto a new plain background."""
    rng = np.random.default_rng(seed)
    out = []
    masks = [object_mask(im, threshold) for im in images]
    usable = [i for i, m in enumerate(masks) if m.sum() >= 16]
    if not usable:
        raise ImageInputError("no object could be cut from the real images (they look like plain background)")
    for k in range(n):
        i = usable[k % len(usable)]
        im, mask = images[i], masks[i]
        h, w = mask.shape
        rgba = torch.from_numpy(np.dstack([im.astype(np.float32), mask.astype(np.float32) * 255])).permute(2, 0, 1)
        angle = np.deg2rad(rng.uniform(-25, 25))
        scale = rng.uniform(0.75, 1.15)
        dx, dy = rng.uniform(-0.15, 0.15, 2)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        c, s = np.cos(angle) / scale, np.sin(angle) / scale
        theta = torch.tensor([[[c * flip, -s, dx], [s * flip, c, dy]]], dtype=torch.float32)
        grid = torch.nn.functional.affine_grid(theta, (1, 4, h, w), align_corners=False)
        warped = torch.nn.functional.grid_sample(rgba[None], grid, align_corners=False, padding_mode="zeros")[0]
        warped = warped.permute(1, 2, 0).numpy()
        alpha = np.clip(warped[..., 3:] / 255.0, 0, 1)
        bg = _background(max(h, w), rng)[:h, :w]
        out.append(np.clip(warped[..., :3] * alpha + bg * (1 - alpha), 0, 255).astype(np.uint8))
    return out


def geometric_augment(images: Sequence[np.ndarray], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` light augmentations of the real images in turn (mirror, a 80-100% crop, ±10°), the
    background kept: what a real-only LoRA and the anchors of every LoRA see."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        im = images[k % len(images)]
        h, w = im.shape[:2]
        t = torch.from_numpy(im.astype(np.float32)).permute(2, 0, 1)[None]
        angle = np.deg2rad(rng.uniform(-10, 10))
        scale = rng.uniform(0.8, 1.0)
        dx, dy = (1 - scale) * rng.uniform(-1, 1, 2)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        theta = torch.tensor([[[c * flip, -s, dx], [s * flip, c, dy]]], dtype=torch.float32)
        grid = torch.nn.functional.affine_grid(theta, (1, 3, h, w), align_corners=False)
        warped = torch.nn.functional.grid_sample(t, grid, align_corners=False, padding_mode="border")[0]
        out.append(warped.permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy())
    return out
