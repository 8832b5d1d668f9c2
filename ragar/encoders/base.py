"""The encoder interface: batched, L2-normalised embeddings with a fingerprint for caching.

Images go in as PIL images, HxWx3 uint8 arrays, file paths or encoded bytes (uploads); preprocessing uses torch only
(``torch.nn.functional.interpolate``), so no torchvision is needed anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ImageLike = Image.Image | np.ndarray | str | Path | bytes

#: Reject anything bigger than this before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 4096 * 4096


class ImageInputError(ValueError):
    """An input that is not a usable image: says which one and why."""


_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 from any PIL mode: 16- and 32-bit grey scaled down (not clipped to white), float
    grey in [0, 1] or [0, 255], transparency composited on white (a cut-out product photo keeps
    its white page, not a black one)."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255):
            a = a / 257.0
        elif im.mode == "F" and a.max() <= 1.0:
            a = a * 255.0
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_rgb(x: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode to HxWx3 uint8, refusing non-images and oversized images with a clear message."""
    if isinstance(x, np.ndarray):
        arr = x
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageInputError(f"array of shape {arr.shape} is not an HxWx3 image")
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageInputError(f"image of {arr.shape[1]}x{arr.shape[0]} exceeds {max_pixels} pixels")
        if arr.dtype != np.uint8:
            if not np.isfinite(arr).all():
                raise ImageInputError("image array contains NaN or inf")
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr[..., :3])
    if isinstance(x, (bytes, bytearray, memoryview)):  # an upload: the header is read before any pixels
        name, x = "uploaded bytes", io.BytesIO(bytes(x))
    else:
        name = x
    if isinstance(x, (str, Path, io.BytesIO)):
        try:
            with Image.open(x) as im:
                if im.width * im.height > max_pixels:
                    raise ImageInputError(f"{name}: {im.width}x{im.height} exceeds {max_pixels} pixels")
                return pil_to_rgb(im)
        except UnidentifiedImageError:
            raise ImageInputError(f"{name}: not a readable image (no image format Pillow decodes: PNG, JPEG, "
                                  "WebP, GIF, BMP, TIFF, ...)") from None
        except (OSError, Image.DecompressionBombError) as e:
            raise ImageInputError(f"{name}: not a readable image ({_ADDRESS.sub('', str(e))})") from None
    if isinstance(x, Image.Image):
        if x.width * x.height > max_pixels:
            raise ImageInputError(f"image of {x.width}x{x.height} exceeds {max_pixels} pixels")
        return pil_to_rgb(x)
    raise ImageInputError(f"cannot read an image from {type(x).__name__}")


def to_batch(images: Sequence[ImageLike], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Decode, resize (bilinear, antialiased) and normalise a list of images into (B, 3, size, size)."""
    out = []
    for im in images:
        t = torch.from_numpy(np.array(load_rgb(im))).permute(2, 0, 1).float().div_(255.0)[None]
        if t.shape[-2:] != (size, size):
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False)
        out.append(t)
    x = torch.cat(out)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def fingerprint(name: str, config: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> str:
    """Stable hash of an encoder's identity: name, preprocessing config and (a digest of) weights."""
    h = hashlib.sha256(name.encode())
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    if state:
        for k in sorted(state):
            # summed by numpy in float64: a torch reduction's order (and so its last bits) follows
            # the thread count, and the same weights must give the same fingerprint in a process
            # with 1 thread (under `accelerate launch`) and one with all cores
            v = state[k].detach().float().flatten().numpy().astype(np.float64)
            h.update(k.encode())
            h.update(np.asarray([v.size, v.sum(), np.abs(v).sum(), v[:64].sum()], np.float64).tobytes())
    return h.hexdigest()[:16]


class Encoder(ABC):
    """What every encoder has: a name, an output dimension, a fingerprint for caches, and the
    device and dtype it computes in (:meth:`to`; the CPU in float32 until moved)."""

    name: str
    dim: int
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    @abstractmethod
    def fingerprint(self) -> str: ...

    def torch_modules(self) -> list[torch.nn.Module]:
        """The modules :meth:`to` moves (``self.model`` unless an encoder holds more)."""
        return [self.model]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Encoder:
        """Move every module; a reduced-precision encoder gets its own fingerprint, so its vectors
        never share a cache with the float32 ones (on the CPU in float32 nothing changes)."""
        for m in self.torch_modules():
            m.to(device=device, dtype=dtype)
        self.device, self.dtype = torch.device(device), dtype
        if dtype != torch.float32 and hasattr(self, "_fp"):
            self._fp = f"{self._fp.split('-')[0]}-{str(dtype).removeprefix('torch.')}"
        return self

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=self.dtype)


class ImageEncoder(Encoder):
    """Embeds images; output rows are unit-norm float32."""

    @abstractmethod
    def _embed(self, batch: Sequence[ImageLike]) -> torch.Tensor: ...

    def encode(self, images: Sequence[ImageLike], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        chunks = []
        with torch.inference_mode():
            for i in tqdm(range(0, len(images), batch_size), desc=f"embed {self.name}", disable=not progress):
                e = self._embed(images[i:i + batch_size]).float()
                chunks.append(torch.nn.functional.normalize(e, dim=-1).cpu().numpy())
        return np.concatenate(chunks).astype(np.float32)


class TextEncoder(Encoder):
    """Embeds texts; output rows are unit-norm float32."""

    @abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...
