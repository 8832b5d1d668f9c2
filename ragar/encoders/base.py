"""The encoder interface: batched, L2-normalised embeddings with a fingerprint for caching.

Images go in as PIL images, HxWx3 uint8 arrays, file paths or encoded bytes (uploads); preprocessing uses torch only
(``torch.nn.functional.interpolate``), so no torchvision is needed anywhere.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# image decoding lives with the data (the lowest layer: the world and the validators read images
# too); re-exported here, where the encoders' callers have always found it
from recsys.data.images import MAX_IMAGE_PIXELS, ImageInputError, ImageLike, load_rgb, pil_to_rgb

__all__ = [
    "MAX_IMAGE_PIXELS",
    "Encoder",
    "ImageEncoder",
    "ImageInputError",
    "ImageLike",
    "TextEncoder",
    "fingerprint",
    "load_rgb",
    "pil_to_rgb",
    "to_batch",
]

def to_batch(images: Sequence[ImageLike], size: int, mean: Sequence[float], std: Sequence[float],
             device: torch.device | str | None = None) -> torch.Tensor:
    """Decode, resize (bilinear, antialiased) and normalise a list of images into (B, 3, size, size),
    on ``device`` (default: the CPU).

    Images of one size (a generated batch, a world's renders) are stacked as uint8, moved once and
    resized as one tensor operation on ``device``. On a lent H200 the CPU work around the UNet was
    most of a served batch (docs/SCALING.md): upscaling 256 candidates 64 -> 224 px for EfficientNet
    alone takes 0.7 s on one core, one image at a time or stacked, where generating them takes 0.5 s
    on the card. On the CPU both paths give the same numbers (tested)."""
    arrays = [np.asarray(load_rgb(im)) for im in images]
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        x = torch.from_numpy(np.stack(arrays)).to(device or "cpu").permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False)
    else:
        out = []
        for a in arrays:
            t = torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)[None]
            if t.shape[-2:] != (size, size):
                t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False)
            out.append(t)
        x = torch.cat(out).to(device or "cpu")
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
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

    #: on a CPU, how many images go through the network at once (None: the whole ``batch_size``).
    #: A convolutional net's activations for a few images stay in the CPU's caches, so a small
    #: forward batch is faster, and an encoder sets this only where the output is bit for bit the
    #: one of the whole batch (tests/ragar/encoders/test_encoders.py checks it).
    cpu_forward_batch: int | None = None

    @abstractmethod
    def _embed(self, batch: Sequence[ImageLike]) -> torch.Tensor: ...

    def forward_batch(self, batch_size: int) -> int:
        """How many of ``batch_size`` images go through the network at once: at most
        :attr:`cpu_forward_batch` on a CPU."""
        if self.cpu_forward_batch and self.device.type == "cpu":
            return min(batch_size, self.cpu_forward_batch)
        return batch_size

    def encode(self, images: Sequence[ImageLike], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch_size = self.forward_batch(batch_size)
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
